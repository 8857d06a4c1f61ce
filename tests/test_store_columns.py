"""columns_from_records: records in memory give the columns FileStore.load_columns reads.

Stores without a columnar loader of their own feed ``Results`` through
:func:`metalab.store.columns.columns_from_records`; these tests check that its columns are
exactly what the Rust file scan returns for the same records written to a FileStore.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalab.errors import CorruptRecordError
from metalab.records import ErrorInfo, RunRecord, RunState
from metalab.store.base import LoadProblem
from metalab.store.columns import columns_from_records
from metalab.store.file import FileStore

_KEYS = st.sampled_from(["a", "b", "lr", "n", "x y", "é"])
_PARAM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
)
_METRIC_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**53), 2**53),
    st.floats(),  # NaN and infinities are stored as strings and read back as floats
    st.text(max_size=5),
)
_WHEN = st.datetimes(
    min_value=dt.datetime(2020, 1, 1),
    max_value=dt.datetime(2030, 1, 1),
    timezones=st.just(dt.UTC),
)


@st.composite
def _records(draw: st.DrawFn) -> list[RunRecord]:
    count = draw(st.integers(0, 12))
    # Distinct (experiment, task index) pairs: both loaders order rows by them, and the
    # order of ties is not part of the column format.
    tasks = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    records = []
    for at, task in enumerate(tasks):
        status = draw(st.sampled_from(list(RunState)))
        started = draw(st.none() | _WHEN)
        finished = (
            None
            if started is None
            else started + draw(st.timedeltas(dt.timedelta(0), dt.timedelta(days=9)))
        )
        records.append(
            RunRecord(
                run_id=f"{at:02x}{draw(st.integers(0, 2**64)):030x}",
                experiment_id=draw(st.sampled_from(["e:1", "e:2", "other:1"])),
                status=status,
                context_fingerprint="c",
                params_fingerprint="p",
                seed_fingerprint="s",
                params=draw(st.dictionaries(_KEYS, _PARAM_VALUES, max_size=4)),
                task_index=task,
                replicate=draw(st.integers(0, 3)),
                metrics=draw(st.dictionaries(_KEYS, _METRIC_VALUES, max_size=4)),
                started_at=started,
                finished_at=finished,
                error=None if status is RunState.SUCCESS else ErrorInfo("E", "boom"),
            )
        )
    return records


def _comparable(value: Any) -> Any:
    """``value`` with NaN made equal to itself (and floats kept apart from equal ints)."""
    if isinstance(value, float):
        return ("nan",) if math.isnan(value) else ("float", value)
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


@given(_records())
def test_columns_from_records_equal_the_file_scan(records: list[RunRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "store")
        for record in records:
            store.put_record(record)
        scanned, scan_problems = store.load_columns()
        loaded = store.load_records()
    assert not scan_problems and not loaded.problems
    for source in (records, loaded.records):
        data, problems = columns_from_records(source, loaded.problems)
        assert problems == []
        assert _comparable(data) == _comparable(scanned)


def test_rows_are_ordered_and_problems_are_passed_through(tmp_path: Path) -> None:
    def record(run_id: str, experiment_id: str, task: int) -> RunRecord:
        return RunRecord(run_id, experiment_id, RunState.SUCCESS, "c", "p", "s", {}, task, 0)

    problems = [LoadProblem("runs/ab/x.json", "not valid JSON")]
    data, out = columns_from_records(
        [record("r3", "b:1", 0), record("r2", "a:1", 5), record("r1", "a:1", 2)], problems
    )
    assert data["run_id"] == ["r1", "r2", "r3"] and data["task_index"] == [2, 5, 0]
    assert out == problems and out is not problems


def test_a_record_failing_a_check_is_a_typed_error() -> None:
    bad = RunRecord("r1", "a:1", RunState.SUCCESS, "c", "p", "s", {}, -1, 0)
    with pytest.raises(CorruptRecordError, match=r"run 'r1'.*task_index"):
        columns_from_records([bad])
