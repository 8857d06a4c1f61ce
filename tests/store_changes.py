"""What can happen to a stored run after it was written, applied to a FileStore.

Shared by the differential tests of the results index (``test_results_index``) and of
its column snapshot (``test_results_snapshot``): after each change, loading through the
index must still answer exactly what reading every record answers.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from metalab.records import RunRecord, RunState
from metalab.store.atomic import atomic_write
from metalab.store.file import FileStore
from metalab.store.record_codec import encode_record

__all__ = ["CHANGES", "IN_PLACE", "change_record"]

CHANGES = ("keep", "rerun", "rerun_failed", "delete", "edit", "unindexed", "corrupt", "orphan")
"""Every kind of change :func:`change_record` applies."""

IN_PLACE = ("keep", "edit", "corrupt")
"""The changes that keep the record file's inode (only its size and time can tell)."""


def change_record(store: FileStore, record: RunRecord, change: str, data: st.DataObject) -> None:
    """Apply ``change`` (one of :data:`CHANGES`) to the stored ``record``."""
    path = store.layout.record(record.run_id)
    if change == "rerun":
        # A new version of the record: only its line may answer.
        store.put_record(replace(record, metrics={"m": data.draw(st.floats())}))
    elif change == "rerun_failed":
        store.put_record(replace(record, status=RunState.FAILED))
    elif change == "delete":
        path.unlink()
    elif change == "edit":
        # In place (same inode): a hand edit, or a truncation.
        with open(path, "r+b") as handle:
            handle.truncate(data.draw(st.integers(0, path.stat().st_size)))
    elif change == "unindexed":
        # Written the way an import or an older metalab writes: no line.
        atomic_write(path, encode_record(replace(record, replicate=7)))
    elif change == "corrupt":
        # Same size, new bytes, in place: only the modification time tells it.
        with open(path, "r+b") as handle:
            handle.write(b"#")
    elif change == "orphan":
        # A marker whose record is gone (deleted by hand).
        path.unlink()
        store.mark(record.run_id, RunState.SUCCESS)
    elif change != "keep":
        raise ValueError(f"unknown change {change!r}: expected one of {CHANGES}")
