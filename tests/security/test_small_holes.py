"""The "smaller holes" of the shared-store hardening, each shown closed.

NumPy values are taken as their Python values everywhere (same run IDs, JSON-ready
manifests and specs), an unserialisable value fails before the store is touched, locator
errors never show a password, ``file:`` locators that name no usable directory are refused,
SlurmConfig takes ASCII digits only, and a garbled launch pointer is a CorruptRecordError.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import metalab
from metalab.errors import CorruptRecordError, EncodingError, LocatorError, SlurmConfigError
from metalab.executors.slurm_config import SlurmConfig
from metalab.plan import RunPlan
from metalab.store import create_store, to_locator
from metalab.store.postgres_config import _SECRETS, _SECRETS_LOCK, redact


def _exp(params: Any, metadata: dict[str, Any] | None = None, context: Any = None) -> Any:
    @metalab.operation
    def op(params, runtime, capture):  # type: ignore[no-untyped-def]
        capture.metric("seen_type", {int: 1, float: 2, bool: 3}.get(type(params["x"]), 0))
        capture.metric("y", np.float64(params["x"]) * 2)
        capture.metric("flag", np.bool_(True))

    return metalab.Experiment(
        name="small",
        version="1",
        context=context if context is not None else {},
        operation=op,
        params=params,
        seeds=metalab.seeds(base=3, replicates=1),
        metadata=metadata,
    )


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- NumPy values are their Python values -----------------------------------------------

NUMPY_AND_PLAIN = [
    (lambda: metalab.grid(x=np.arange(3)), lambda: metalab.grid(x=[0, 1, 2])),
    (lambda: metalab.grid(x=[np.float64(0.5)]), lambda: metalab.grid(x=[0.5])),
    (lambda: metalab.grid(x=[np.float32(0.25)]), lambda: metalab.grid(x=[0.25])),
    (lambda: metalab.grid(x=[np.bool_(True)]), lambda: metalab.grid(x=[True])),
    (lambda: metalab.manual([{"x": np.int64(3)}]), lambda: metalab.manual([{"x": 3}])),
    (
        lambda: metalab.random(
            {"x": metalab.choice(np.arange(4)), "u": metalab.uniform(np.float32(0), 1)},
            n_trials=np.int64(3),
            seed=np.int64(5),
        ),
        lambda: metalab.random(
            {"x": metalab.choice([0, 1, 2, 3]), "u": metalab.uniform(0.0, 1)}, n_trials=3, seed=5
        ),
    ),
]


@pytest.mark.parametrize(("with_numpy", "plain"), NUMPY_AND_PLAIN)
def test_numpy_params_run_with_the_run_ids_of_python_values(
    with_numpy: Any, plain: Any, tmp_path: Path
) -> None:
    exp = _exp(with_numpy(), metadata={"n": np.int64(5), "shape": np.array([2, 3])})
    twin = _exp(plain())
    assert RunPlan(exp).run_ids == RunPlan(twin).run_ids

    results = metalab.run(exp, store=tmp_path / "np").result()
    assert sorted(r.run_id for r in results) == sorted(RunPlan(twin).run_ids)
    assert all(r.status.value == "success" for r in results)
    # The operation sees the Python type, as a worker would after the JSON round trip.
    expected_type = {int: 1, float: 2, bool: 3}[type(plain()[0]["x"])]
    assert {r.metrics["seen_type"] for r in results} == {expected_type}
    # Records hold the values themselves (not their str(), as json's default=str made them).
    assert sorted(r.params["x"] for r in results) == sorted(p["x"] for p in plain())
    assert {type(r.params["x"]) for r in results} == {type(plain()[0]["x"])}

    (manifest_path,) = (tmp_path / "np" / "experiments").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["params"] == json.loads(json.dumps(plain().spec()))  # numbers, not "0"
    assert manifest["metadata"] == {"n": 5, "shape": [2, 3]}


def test_numpy_context_values_are_json_ready(tmp_path: Path) -> None:
    exp = _exp(metalab.grid(x=[1]), context={"n_cells": np.int64(50000), "w": np.arange(2)})
    assert (
        RunPlan(exp).context_fp
        == RunPlan(_exp(metalab.grid(x=[1]), context={"n_cells": 50000, "w": [0, 1]})).context_fp
    )
    metalab.run(exp, store=tmp_path / "ctx").result()
    (manifest_path,) = (tmp_path / "ctx" / "experiments").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["context"] == {"__metalab_plain__": {"n_cells": 50000, "w": [0, 1]}}


def test_unserialisable_metadata_fails_before_anything_is_written(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(EncodingError, match=r"metadata\['groups'\]\[1\]") as info:
        _exp(metalab.grid(x=[1]), metadata={"groups": ["a", {1, 2}]})
    assert "'set'" in str(info.value)

    # Edited after the Experiment was built: still refused before the manifest is written.
    exp = _exp(metalab.grid(x=[1]), metadata={"ok": 1})
    exp.metadata["when"] = np.datetime64("2024-01-01T00:00:00.000000000")
    with pytest.raises(EncodingError, match=r"'datetime64' at metadata\['when'\]"):
        metalab.run(exp, store=store)
    assert _files(store) == []

    exp.metadata["when"] = float("nan")
    with pytest.raises(EncodingError, match=r"metadata\['when'\]"):
        metalab.run(exp, store=store)
    assert _files(store) == []


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda: metalab.grid(x=[1, np.datetime64("NaT")]), r"grid\['x'\]\[1\]"),
        (lambda: metalab.grid(x=[np.complex128(1j)]), r"grid\['x'\]\[0\]"),
        (
            lambda: metalab.manual([{"x": [np.longdouble(1)]}]),
            r"'longdouble' at values\[0\]\['x'\]\[0\]",
        ),
        (lambda: metalab.choice([np.timedelta64(1, "ns")]), r"value"),
    ],
)
def test_numpy_values_without_a_python_equal_are_encoding_errors(make: Any, path: str) -> None:
    with pytest.raises(EncodingError, match=path):
        make()


# -- locator errors never show a password -----------------------------------------------

_PRINTABLE = st.characters(categories=("L", "M", "N", "P", "S", "Zs"))
_SPECIALS = st.sampled_from(list("@:/ %#?&=+;'\"\\[]"))
passwords = st.text(st.one_of(_SPECIALS, _PRINTABLE), min_size=3, max_size=24)

_TEMPLATES = (
    "postgresql://u:{pw}@host:99999/db",  # bad port
    "postgresql://u:{pw}@host/db?bogus=1",  # unknown parameter
    "postgresql://u:{pw}@host/db",  # may parse: then repr/locator are checked
    "postgresql://u:{pw}@host:5432/db?schema=Bad-Schema",
    "postgresql://u:{qpw}@host:99999/db",  # the same, percent-encoded
    "postgresql://u:{qpw}@host/db?bogus=1",
    "postgresql://u:{qpw}@host/db",
    "postgresql://u@host/db?password={qpw}&pool_size=0",
    "postgres://u:{pw}@[::1/db",  # broken IPv6 literal
    "postgressql://u:{pw}@host/db",  # misspelt scheme
    "fallback://?primary=postgresql%3A%2F%2Fu%3A{qqpw}%40h%2Fdb&fallback=%2Ftmp%2Fx&bogus=1",
)


def _texts(locator: str) -> list[str]:
    """Every text a user can see for ``locator``: the error, or the store's repr/locator."""
    try:
        store = create_store(locator)
    except LocatorError as exc:
        return [str(exc), repr(exc)]
    texts = [repr(store), store.locator, to_locator(store)]
    config = getattr(store, "config", None)
    return texts + ([repr(config), str(config), config.locator()] if config else [])


def _fill(template: str, pw: str) -> str:
    qpw = quote(pw, safe="")
    return template.format(pw=pw, qpw=qpw, qqpw=quote(qpw, safe=""))


def _fixed_text() -> str:
    """What the messages say whatever the password: a password inside it proves nothing."""
    return "\n".join(t for template in _TEMPLATES for t in _texts(_fill(template, "Zq9")))


@pytest.fixture(scope="module")
def fixed_text() -> str:
    return _fixed_text()


@given(pw=passwords)
@example(pw="se@cr3t")
@example(pw="se cr3t")
@example(pw="p/ss#w%rd:x")
@example(pw="12/x")
@example(pw="a@b:c d/e#f%g?h")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_locator_error_or_repr_contains_the_password(pw: str, fixed_text: str) -> None:
    assume(pw not in fixed_text and "Zq9" not in pw)
    forms = {pw, quote(pw, safe=""), repr(pw)[1:-1]}
    with _SECRETS_LOCK:  # a password remembered from an earlier example must not help
        remembered = set(_SECRETS)
        _SECRETS.clear()
    try:
        for template in _TEMPLATES:
            for text in _texts(_fill(template, pw)):
                leaked = [form for form in forms if form in text]
                assert not leaked, f"{template}: {text!r} shows {leaked}"
    finally:
        with _SECRETS_LOCK:  # exactly as before: random passwords must not mask later output
            _SECRETS.clear()
            _SECRETS.update(remembered)


def test_password_locator_errors_say_how_to_fix_them() -> None:
    with pytest.raises(LocatorError) as info:
        create_store("postgresql://u:se@cr3t@host:99999/db")
    assert "cr3t" not in str(info.value) and "postgresql://u:***@host:99999/db" in str(info.value)
    with pytest.raises(LocatorError, match="ambiguous") as info:
        create_store("postgresql://u:se/cr3t@host/db")
    assert "cr3t" not in str(info.value) and "quote(password, safe='')" in str(info.value)
    assert "se cr3t" not in redact("could not connect to postgresql://u:se cr3t@host/db")
    assert redact("PGPASSWORD=se cr3t psql") == "PGPASSWORD=***"


# -- file: locators that name no usable directory ----------------------------------------


@pytest.mark.parametrize("locator", ["file:///", "file:////", "file:///tmp/..", "/", Path("/")])
def test_filesystem_root_is_not_a_store(locator: Any) -> None:
    with pytest.raises(LocatorError, match=r"filesystem root.*file:///abs/path"):
        create_store(locator)


@pytest.mark.parametrize(
    "locator", ["file:relative", "file:runs/exp", "file:/abs", "postgresql:db"]
)
def test_scheme_without_slashes_is_refused(
    locator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LocatorError, match="lacks '//'"):
        create_store(locator)
    assert list(tmp_path.iterdir()) == []  # no folder named "file:relative"


def test_accepted_file_forms_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert create_store(f"file://{tmp_path}/a").locator == (tmp_path / "a").as_uri()
    assert create_store("runs/exp").locator == (tmp_path / "runs" / "exp").as_uri()
    assert create_store("exp:1").locator == (tmp_path / "exp:1").as_uri()  # not a scheme


# -- SlurmConfig takes ASCII digits only ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("time", "\u0661:00:00"),  # ARABIC-INDIC DIGIT ONE: `\d` matched it
        ("time", "\uff11:00:00"),  # FULLWIDTH DIGIT ONE
        ("time", "1:00:00\u3000"),  # IDEOGRAPHIC SPACE: str.strip() removed it
        ("time", "\u0967-00"),  # DEVANAGARI DIGIT ONE
        ("memory", "4\u212a"),  # KELVIN SIGN: matched K under IGNORECASE
        ("memory", "\u0664G"),
    ],
)
def test_slurm_config_refuses_non_ascii_digits(field: str, bad: str) -> None:
    with pytest.raises(SlurmConfigError) as info:
        SlurmConfig(**{field: bad})
    message = str(info.value)
    assert repr(bad) in message and ascii(bad) in message and isinstance(info.value, ValueError)


def test_refused_slurm_values_are_ones_sbatch_refuses() -> None:
    """The values refused above are ones sbatch itself rejects (so refusing is right)."""
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed")
    for option in ("--time=\u0661:00:00", "--mem=4\u212a"):
        done = subprocess.run(
            ["sbatch", "--test-only", option, "--wrap=true"], capture_output=True, text=True
        )
        assert done.returncode != 0 and "Invalid" in done.stderr, (option, done.stderr)


def test_slurm_time_is_passed_on_without_surrounding_blanks() -> None:
    assert SlurmConfig(time=" 1:00:00\t").time == "1:00:00"


# -- a garbled launch pointer --------------------------------------------------------------


def _launched_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    metalab.run(_exp(metalab.grid(x=[1, 2])), store=store).result()
    return store


@pytest.mark.parametrize(
    "garbage",
    [
        b'{"experiment_id": "small:1", "exec',
        b"\xff\xfe not text",
        b"[1, 2]",
        b'{"experiment_id": 7}',
    ],
)
def test_garbled_launch_pointer_is_a_corrupt_record_error(garbage: bytes, tmp_path: Path) -> None:
    store = _launched_store(tmp_path)
    (pointer,) = store.rglob("launch-latest.json")
    pointer.write_bytes(garbage)
    with pytest.raises(CorruptRecordError) as info:
        metalab.reconnect(store)
    message = str(info.value)
    assert (
        "launch pointer blob 'launch-latest.json'" in message
        and "run the experiment again" in message
    )
    # The experiment's own pointer still works, as the message suggests.
    assert len(metalab.reconnect(store, experiment_id="small:1").result()) == 2


def test_launch_pointer_of_the_wrong_shape_is_a_corrupt_record_error(tmp_path: Path) -> None:
    store = _launched_store(tmp_path)
    (pointer,) = store.rglob("launch-latest.json")
    pointer.write_text(json.dumps({"experiment_id": "small:1", "executor": "slurm"}))
    with pytest.raises(CorruptRecordError, match="lacks a usable field"):
        metalab.reconnect(store)


def test_garbled_launch_pointer_in_postgres(tmp_path: Path) -> None:
    """Whoever may UPDATE the blobs table can garble the pointer: still a typed error."""
    from metalab.store.postgres import PostgresStore
    from services import postgres_url

    locator = f"{postgres_url()}?schema=t_{uuid.uuid4().hex}&artifact_root={tmp_path / 'art'}"
    metalab.run(_exp(metalab.grid(x=[1])), store=locator).result()
    store = PostgresStore.from_locator(locator)
    try:
        store.put_blob("launch-latest.json", b"{not json")
        with pytest.raises(CorruptRecordError, match=r"launch pointer blob 'launch-latest\.json'"):
            metalab.reconnect(locator)
    finally:
        store.drop_schema()
        store.close()
