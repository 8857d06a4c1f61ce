"""columns_from_records: records in memory give the columns FileStore.load_columns reads.

Stores without a columnar loader of their own feed ``Results`` through
:func:`metalab.store.columns.columns_from_records`; these tests check that its columns are
exactly what the Rust file scan returns for the same records written to a FileStore.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given

from metalab.errors import CorruptRecordError
from metalab.records import RunRecord, RunState
from metalab.store.base import LoadProblem
from metalab.store.columns import columns_from_records
from metalab.store.file import FileStore
from record_strategies import comparable, records


@given(records())
def test_columns_from_records_equal_the_file_scan(runs: list[RunRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "store")
        for record in runs:
            store.put_record(record)
        scanned, scan_problems = store.load_columns()
        loaded = store.load_records()
    assert not scan_problems and not loaded.problems
    for source in (runs, loaded.records):
        data, problems = columns_from_records(source, loaded.problems)
        assert problems == []
        assert comparable(data) == comparable(scanned)


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
