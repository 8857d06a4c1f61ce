"""Results that keep experiments apart: experiment_id and replicate shown when rows would
look alike, a filter by experiment at load, one warning when versions mix, and a summary
made of numbers whose display says what ± is."""

from __future__ import annotations

import math
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.errors import ExperimentError
from metalab.results import Results
from metalab.store import FileStore


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@metalab.operation
def measure(params: dict[str, Any], seeds: Any, capture: Any) -> None:
    # Known numbers: y = x * 10 + replicate, so each x group's spread is exact.
    capture.metric("y", params["x"] * 10 + seeds.replicate)


def _exp(version: str, xs: tuple[int, ...] = (1, 2), replicates: int = 3) -> metalab.Experiment:
    return metalab.Experiment(
        name="my_exp",
        version=version,
        context={},
        operation=measure,
        params=metalab.grid(x=list(xs)),
        seeds=metalab.seeds(base=11, replicates=replicates),
    )


@pytest.fixture
def two_versions() -> str:
    """``my_exp:v1`` and ``my_exp:0.1`` in the default store ``./runs/my_exp``."""
    metalab.run(_exp("v1")).result()
    metalab.run(_exp("0.1", xs=(1,), replicates=2)).result()
    return "./runs/my_exp"


def _load(*args: Any, **kwargs: Any) -> tuple[Results, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = metalab.load_results(*args, **kwargs)
    return results, [str(w.message) for w in caught if w.category is UserWarning]


def test_loading_mixed_versions_warns_once_in_plain_words(two_versions: str) -> None:
    results, said = _load(two_versions)
    assert len(results) == 8 and len(said) == 1
    assert said[0].startswith(
        "load_results: these results mix 2 versions of my_exp: my_exp:0.1 (2 runs), "
        "my_exp:v1 (6 runs)."
    )
    assert "experiment='my_exp:v1'" in said[0]


def test_table_shows_experiment_and_replicate_when_rows_would_look_alike(
    two_versions: str,
) -> None:
    results, _ = _load(two_versions)
    rows = results.table()
    assert list(rows[0])[:2] == ["experiment_id", "replicate"]
    seen = {(r["experiment_id"], r["x"], r["replicate"]) for r in rows}
    assert len(seen) == len(rows) == 8  # no two rows look the same any more
    header = str(rows).splitlines()[0].split()
    assert header[:2] == ["experiment_id", "replicate"]
    store = FileStore(two_versions)
    slow = Results.from_records(store.load_records().records, store)
    assert [list(r)[:2] for r in slow.table()] == [["experiment_id", "replicate"]] * 8
    # One version alone, one replicate: neither column is noise.
    single = metalab.run(_exp("solo", replicates=1), store="solo").result()
    assert all("experiment_id" not in r and "replicate" not in r for r in single.table())


def test_load_results_filters_by_experiment(two_versions: str) -> None:
    v1, said = _load(two_versions, experiment="my_exp:v1")
    assert {r.record.experiment_id for r in v1} == {"my_exp:v1"} and len(v1) == 6 and not said
    assert all("experiment_id" not in row for row in v1.table())
    by_object, _ = _load(two_versions, experiment=_exp("0.1"))
    assert {r.record.experiment_id for r in by_object} == {"my_exp:0.1"} and len(by_object) == 2
    every_version, said = _load(two_versions, experiment="my_exp")
    assert len(every_version) == 8 and len(said) == 1 and "mix 2 versions" in said[0]
    exact, _ = _load(two_versions, experiment_id="my_exp:0.1")  # the documented keyword
    assert len(exact) == 2


def test_a_filter_matching_nothing_says_what_the_store_holds(two_versions: str) -> None:
    results, said = _load(two_versions, experiment="my_exp:v2")
    assert len(results) == 0
    assert said == [
        f"load_results: {FileStore(two_versions).locator} holds no runs of 'my_exp:v2'; "
        f"it holds: my_exp:0.1, my_exp:v1"
    ]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"experiment": 42}, "42"),
        ({"experiment": ""}, "''"),
        ({"experiment": "my_exp", "experiment_id": "my_exp:v1"}, "not both"),
    ],
)
def test_bad_experiment_filters_are_refused(
    two_versions: str, kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ExperimentError, match=named):
        metalab.load_results(two_versions, **kwargs)


def test_summary_returns_mean_std_sem_and_n_as_numbers() -> None:
    results = metalab.run(_exp("v1", xs=(1, 2, 3), replicates=3)).result()
    rows = results.summary(group_by=["x"])
    assert [row["x"] for row in rows] == [1, 2, 3]
    for row in rows:
        values = [row["x"] * 10 + r for r in range(3)]
        assert row["runs"] == 3 and row["y_n"] == 3
        assert row["y_mean"] == statistics.fmean(values)
        assert row["y_std"] == pytest.approx(statistics.stdev(values))
        assert row["y_sem"] == pytest.approx(statistics.stdev(values) / math.sqrt(3))
        assert isinstance(row["y_mean"], float) and isinstance(row["y_n"], int)
    assert results.summary("x") == rows  # one name works like a list of one
    whole = results.summary()
    assert len(whole) == 1 and whole[0]["runs"] == 9 and whole[0]["y_mean"] == 21.0
    frame = results.summary(group_by=["x"], as_dataframe=True)
    assert list(frame.columns) == ["x", "runs", "y_mean", "y_std", "y_sem", "y_n"]
    assert frame["y_mean"].tolist() == [11.0, 21.0, 31.0]
    with pytest.raises(ExperimentError, match="group_by"):
        results.summary(group_by=[3])


def test_summary_of_mixed_versions_groups_by_experiment(two_versions: str) -> None:
    results, _ = _load(two_versions)
    rows = results.summary(group_by=["x"])
    assert [(r["experiment_id"], r["x"], r["runs"]) for r in rows] == [
        ("my_exp:0.1", 1, 2),
        ("my_exp:v1", 1, 3),
        ("my_exp:v1", 2, 3),
    ]
    assert rows[0]["y_mean"] == 10.5  # replicates 0 and 1 of the other version only


def test_single_value_groups_have_no_spread() -> None:
    results = metalab.run(_exp("v1", replicates=1)).result()
    rows = results.summary(group_by=["x"])
    assert all(row["y_n"] == 1 and math.isnan(row["y_std"]) for row in rows)
    assert all(math.isnan(row["y_sem"]) for row in rows)


def test_display_labels_what_plus_minus_is(capsys: pytest.CaptureFixture[str]) -> None:
    results = metalab.run(_exp("v1")).result()
    capsys.readouterr()
    results.display(group_by=["x"])
    out = capsys.readouterr().out
    assert "y (mean ± std)" in out and "11 ± 1" in out
    assert "± is the sample standard deviation (n - 1 denominator)" in " ".join(out.split())


def test_display_without_rich_labels_it_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = metalab.run(_exp("v1")).result()
    for module in ("rich", "rich.console", "rich.table"):
        monkeypatch.setitem(sys.modules, module, None)  # as if rich were not installed
    capsys.readouterr()
    results.display(group_by="x")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "6 runs (6 successful)"
    assert lines[1].split() == ["x", "runs", "y", "(mean", "±", "std)"]
    assert lines[3].split() == ["1", "3", "11", "±", "1"]
    assert lines[-1].startswith("± is the sample standard deviation (n - 1 denominator)")
