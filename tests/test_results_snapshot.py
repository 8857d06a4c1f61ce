"""The column snapshot of the results index: a load answered from it equals the records.

A whole load through the index saves its answer (``index/.../columns.snapshot``, see
``rust/src/index/snapshot.rs``) and the next loads answer from it while every record file
is the version it lists. Differential, under hypothesis: after a snapshot is saved, random
changes (reruns, failed reruns, deletions, edits in place, records written without a line,
new runs, done markers without a record, corrupt records) and a load through the snapshot
still give exactly what reading every record gives.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metalab
from metalab import _core
from metalab.records import RunRecord
from metalab.store import file as file_module
from metalab.store.file import FileStore
from record_strategies import comparable, records
from store_changes import CHANGES, IN_PLACE, change_record


@pytest.fixture(autouse=True)
def _every_load_saves() -> Iterator[None]:
    """Snapshots for stores of any size (the default threshold is for large stores)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_module, "SNAPSHOT_MIN_RECORDS", 0)
        yield


def _load(store: FileStore, experiment_id: str | None = None) -> tuple[Any, dict[str, Any]]:
    data, problems = store.load_columns(experiment_id)
    data["problems"] = [(p.location, p.reason) for p in problems]
    return comparable(data), dict(store.last_index_stats)


def _expected(store: FileStore, experiment_id: str | None = None) -> Any:
    data = _core.load_record_columns(store.layout.scan, None, experiment_id)
    data["problems"] = [(path, reason) for path, reason, _ in data["problems"]]
    return comparable(data)


_CHANGES = st.sampled_from(CHANGES)
_IN_PLACE = st.sampled_from(IN_PLACE)


@settings(max_examples=40, deadline=None)
@given(records(), st.data())
def test_snapshot_answers_equal_record_answers(runs: list[RunRecord], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_module, "SNAPSHOT_MIN_RECORDS", 0)
        store = FileStore(Path(tmp) / "store")
        for record in runs:
            store.put_record(record)
            store.mark(record.run_id, record.status)
        experiment = data.draw(st.sampled_from([None, "e:1", "other:1"]))
        first, saved = _load(store, experiment)
        assert first == _expected(store, experiment)
        again, stats = _load(store, experiment)
        assert again == first
        if runs:
            # A load with no problem saved its answer; the next one was answered by it.
            assert saved["snapshot_written"] is (not first["problems"])
            assert stats["from_snapshot"] == (len(runs) if saved["snapshot_written"] else 0)
        # File times tick every few ms: an edit of the same size must land on a new one.
        time.sleep(0.01)
        # Half the stores see only edits in place (the listing stays the same, so only the
        # records' sizes and times can tell the snapshot is stale).
        changes = _IN_PLACE if data.draw(st.booleans()) else _CHANGES
        for record in runs:
            change_record(store, record, data.draw(changes), data)
        now, _ = _load(store, experiment)
        assert now == _expected(store, experiment)
        # The load after it answers the same, from a snapshot or not.
        later, _ = _load(store, experiment)
        assert later == now


@metalab.operation
def _double(params: dict[str, Any], capture: Any) -> None:
    capture.metric("y", params["x"] * 2.0)


def _experiment(n: int, name: str = "snap") -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=_double,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=5, replicates=1),
    )


def _sweep(root: Path, n: int) -> tuple[FileStore, metalab.Experiment]:
    experiment = _experiment(n)
    store = FileStore(root / "store")
    metalab.run(experiment, store=store, executor=metalab.ThreadExecutor(2)).result()
    return store, experiment


def test_a_finished_sweep_loads_from_its_snapshot(tmp_path: Path) -> None:
    store, experiment = _sweep(tmp_path, 40)
    first = metalab.load_results(store, experiment_id=experiment.experiment_id)
    assert store.last_index_stats["snapshot_written"] is True
    assert store.layout.index_snapshot(experiment.experiment_id).is_file()
    second = metalab.load_results(store, experiment_id=experiment.experiment_id)
    assert store.last_index_stats["from_snapshot"] == 40
    assert second.to_dataframe().equals(first.to_dataframe())
    # Another experiment written into the store: the listing changed, so the snapshot no
    # longer answers (the answer is the same), and the load saves the new listing's.
    other = _experiment(5, name="other")
    metalab.run(other, store=store, executor=metalab.ThreadExecutor(1)).result()
    third = metalab.load_results(store, experiment_id=experiment.experiment_id)
    assert store.last_index_stats["from_snapshot"] == 0
    assert third.to_dataframe().equals(first.to_dataframe())
    metalab.load_results(store, experiment_id=experiment.experiment_id)
    assert store.last_index_stats["from_snapshot"] == 45
    # A run deleted by hand: reported as missing (its marker stays), never from the snapshot.
    gone = first.to_dataframe()["run_id"].iloc[3]
    store.layout.record(gone).unlink()
    fourth = metalab.load_results(store, experiment_id=experiment.experiment_id)
    assert store.last_index_stats["from_snapshot"] == 0
    assert len(fourth.to_dataframe()) == 39 and gone not in set(fourth.to_dataframe()["run_id"])


def test_a_corrupt_or_foreign_snapshot_is_ignored_and_replaced(tmp_path: Path) -> None:
    store, experiment = _sweep(tmp_path, 10)
    metalab.load_results(store, experiment_id=experiment.experiment_id)
    snapshot = store.layout.index_snapshot(experiment.experiment_id)
    good = snapshot.read_bytes()
    for bad in (good[:-3], good[:100] + bytes([good[100] ^ 1]) + good[101:], b"garbage"):
        snapshot.write_bytes(bad)
        frame = metalab.load_results(store, experiment_id=experiment.experiment_id)
        assert store.last_index_stats["from_snapshot"] == 0
        assert sorted(frame.to_dataframe()["y"]) == [2.0 * x for x in range(10)]
        assert store.last_index_stats["snapshot_written"] is True
    assert snapshot.read_bytes() != b"garbage"


def test_a_snapshot_that_cannot_be_saved_changes_nothing(tmp_path: Path) -> None:
    """Saving fails (here: a directory holds the snapshot's name; for a co-user who may
    only read the store, the permission): the load still answers, reports that nothing
    was saved and leaves no temporary file behind."""
    store, experiment = _sweep(tmp_path, 10)
    blocked = store.layout.index_snapshot(experiment.experiment_id)
    blocked.mkdir(parents=True)
    (blocked / "keep").write_text("x")
    before = sorted(str(p) for p in store.root.rglob("*"))
    for _ in range(2):
        frame = metalab.load_results(store, experiment_id=experiment.experiment_id)
        assert len(frame.to_dataframe()) == 10
        assert store.last_index_stats["snapshot_written"] is False
        assert store.last_index_stats["from_snapshot"] == 0
    assert sorted(str(p) for p in store.root.rglob("*")) == before


def test_an_edit_in_place_is_seen_through_the_snapshot(tmp_path: Path) -> None:
    """The inode stays, so the listing alone cannot tell: the size and modification time
    of every record are checked against the snapshot's."""
    store, experiment = _sweep(tmp_path, 10)
    metalab.load_results(store, experiment_id=experiment.experiment_id)
    frame = metalab.load_results(store, experiment_id=experiment.experiment_id).to_dataframe()
    assert store.last_index_stats["from_snapshot"] == 10
    run_id = frame["run_id"].iloc[0]
    path = store.layout.record(run_id)
    text = path.read_text()
    old = f'"y": {frame["y"].iloc[0]}'
    assert old in text
    new = '"y": ' + "7" * (len(old) - len('"y": '))
    time.sleep(0.01)  # file times tick every few ms
    with open(path, "r+") as handle:  # in place, same size
        handle.write(text.replace(old, new))
    edited = metalab.load_results(store, experiment_id=experiment.experiment_id).to_dataframe()
    assert store.last_index_stats["from_snapshot"] == 0
    assert edited.loc[edited["run_id"] == run_id, "y"].iloc[0] == float(new[5:])
