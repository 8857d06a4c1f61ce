"""Bad input: a typed error from metalab.errors, raised before any run, naming the value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab import errors
from metalab.store import create_store


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _noop(capture):
    capture.metric("x", 1)


CASES = [
    ("nan param", lambda: metalab.grid(lr=[0.1, math.nan]), errors.EncodingError, "nan"),
    ("inf manual", lambda: metalab.manual([{"lr": math.inf}]), errors.EncodingError, "inf"),
    ("object param", lambda: metalab.grid(f=[object()]), errors.EncodingError, "object"),
    ("duplicate grid value", lambda: metalab.grid(bs=[32, 32]), errors.ParamSpecError, "32"),
    ("string axis", lambda: metalab.grid(model="resnet"), errors.ParamSpecError, "'resnet'"),
    ("empty axis", lambda: metalab.grid(lr=[]), errors.ParamSpecError, "'lr'"),
    ("no axes", lambda: metalab.grid(), errors.ParamSpecError, "at least one axis"),
    (
        "n_trials 0",
        lambda: metalab.random({"a": metalab.uniform(0, 1)}, n_trials=0),
        errors.ParamSpecError,
        "0",
    ),
    ("bad uniform", lambda: metalab.uniform(1.0, 0.5), errors.ParamSpecError, "0.5"),
    ("loguniform <= 0", lambda: metalab.loguniform(0, 1), errors.ParamSpecError, "low=0"),
    ("randint order", lambda: metalab.randint(5, 1), errors.ParamSpecError, "high=1"),
    ("empty choice", lambda: metalab.choice([]), errors.ParamSpecError, "at least one"),
    ("manual non-dict", lambda: metalab.manual([{"a": 1}, 3]), errors.ParamSpecError, "3"),
    ("replicates 0", lambda: metalab.seeds(base=1, replicates=0), errors.SeedSpecError, "0"),
    ("seed base huge", lambda: metalab.seeds(base=2**70), errors.SeedSpecError, str(2**70)),
    (
        "unknown op arg",
        lambda: metalab.operation(lambda data: None),
        errors.ExperimentError,
        "'data'",
    ),
    (
        "dotdot version",
        lambda: metalab.Experiment(
            name="e",
            version="1..2",
            context={},
            operation=_noop,
            params=metalab.grid(a=[1]),
            seeds=metalab.seeds(base=1),
        ),
        errors.ExperimentError,
        "'1..2'",
    ),
    ("unknown scheme", lambda: create_store("s3://bucket/x"), errors.LocatorError, "'s3'"),
    ("malformed locator", lambda: create_store("://nothing"), errors.LocatorError, "://nothing"),
    ("file locator host", lambda: create_store("file://host/x"), errors.LocatorError, "host"),
    (
        "bad display metric",
        lambda: metalab.Progress(display_metrics=["loss:.4q"]),
        errors.ExperimentError,
        ".4q",
    ),
]


@pytest.mark.parametrize(("label", "make", "error", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_typed_error_naming_the_value(
    label: str, make, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as info:
        make()
    assert needle in str(info.value), f"{label}: {info.value}"
    assert isinstance(info.value, errors.MetalabError)


def test_missing_context_file_fails_before_any_run(tmp_path: Path) -> None:
    @metalab.context_spec
    class Ctx:
        dataset: metalab.FilePath

    calls: list[int] = []

    def op(capture):
        calls.append(1)

    exp = metalab.Experiment(
        "ctx",
        "1",
        Ctx(dataset=metalab.FilePath("missing.csv")),
        op,
        metalab.grid(x=[1, 2]),
        metalab.seeds(0),
    )
    with pytest.raises(errors.ContextError, match=r"'dataset'.*missing\.csv"):
        metalab.run(exp)
    assert calls == [] and not (tmp_path / "runs" / "ctx" / "runs").exists()


def test_bad_run_arguments() -> None:
    exp = metalab.Experiment("e", "1", {}, _noop, metalab.grid(x=[1]), metalab.seeds(0))
    with pytest.raises(errors.ExperimentError, match="-1"):
        metalab.run(exp, timeout=-1)
    with pytest.raises(errors.ExperimentError, match="progress"):
        metalab.run(exp, progress="yes")
    with pytest.raises(errors.ExperimentError, match="not callable"):
        metalab.run(exp, derived_metrics=[42])
    with pytest.raises(errors.ExperimentError, match="Experiment"):
        metalab.run({"name": "e"})


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
anything = (
    json_like
    | st.sets(st.integers(), max_size=2)
    | st.binary(max_size=4)
    | st.builds(object)
    | st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2)
)


@given(anything)
def test_encoder_fuzz_never_fails_other_than_documented(value: object) -> None:
    try:
        metalab.identity.fingerprint(value)
    except errors.EncodingError as exc:
        assert "value" in str(exc)


@given(st.text(max_size=60))
def test_locator_fuzz_never_fails_other_than_documented(text: str) -> None:
    try:
        store = create_store(text)
    except errors.LocatorError:
        return
    except errors.StoreError:
        return
    assert store.locator
