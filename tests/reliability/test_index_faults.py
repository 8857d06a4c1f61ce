"""The results index under faults: a writer killed mid-append, a corrupted segment.

In every case the loaded answers equal those of the records (the index only ever
answers for the record version a valid line summarises), the damage is counted in
``FileStore.last_index_stats``, and ``metalab store reindex`` rebuilds a clean index.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from metalab import _core
from metalab.errors import StoreError
from metalab.records import RunRecord, RunState
from metalab.store.atomic import atomic_write
from metalab.store.columns import record_summary
from metalab.store.file import FileStore
from metalab.store.index_segments import summary_line
from metalab.store.record_codec import encode_record


def _record(i: int) -> RunRecord:
    return RunRecord(
        run_id=f"{i:032x}",
        experiment_id="e:1",
        status=RunState.SUCCESS if i % 5 else RunState.FAILED,
        context_fingerprint="c",
        params_fingerprint="p",
        seed_fingerprint="s",
        params={"i": i, "name": "x" * (i % 7)},
        task_index=i,
        replicate=i % 3,
        metrics={"m": i * 0.25},
    )


def _assert_answers_are_the_records(store: FileStore) -> dict[str, int]:
    data, problems = store.load_columns()
    stats = dict(store.last_index_stats)
    expected = _core.load_record_columns(store.layout.scan, None, None)
    assert [(p.location, p.reason) for p in problems] == [
        (path, reason) for path, reason, _ in expected.pop("problems")
    ]
    assert data == expected
    return stats


_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_index_faults import _record
    from metalab.store.file import FileStore
    store = FileStore(sys.argv[1])
    i = 0
    while True:
        store.put_record(_record(i))
        i += 1
    """
)


def test_a_writer_killed_mid_append_leaves_a_readable_index(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store.root), str(Path(__file__).parent)]
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            segments = store.layout.segments()
            if segments and segments[0].stat().st_size > 200_000:
                break
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    (segment,) = store.layout.segments()
    stats = _assert_answers_are_the_records(store)
    assert stats["bad_lines"] <= 1  # at most the line being appended at the kill
    assert stats["indexed"] >= 300
    # At most the runs whose record was written but whose line was not yet complete.
    assert stats["from_records"] <= 1

    # A torn line the way a kill leaves one: the head of a line, no newline.
    record = _record(10**6)
    written = atomic_write(store.layout.record(record.run_id), encode_record(record))
    line = summary_line(record_summary(record), written)
    with open(segment, "ab") as handle:
        handle.write(line[: len(line) // 2])
    stats = _assert_answers_are_the_records(store)
    assert stats["bad_lines"] == (stats["lines"] - stats["indexed"])
    assert stats["from_records"] >= 1


def test_a_corrupt_segment_is_detected_ignored_and_rebuilt(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    for i in range(200):
        store.put_record(_record(i))
    (segment,) = store.layout.segments()
    data = bytearray(segment.read_bytes())
    for at in range(100, len(data), len(data) // 25):
        data[at] ^= 0x20  # e.g. a disk or a copy flipping bits
    segment.write_bytes(bytes(data))
    stats = _assert_answers_are_the_records(store)
    assert 20 <= stats["bad_lines"] <= 26, stats
    assert stats["indexed"] + stats["from_records"] == 200
    # A flipped newline merges two lines into one bad one.
    assert stats["from_records"] >= stats["bad_lines"]

    report = store.reindex()
    assert report.experiments == {"e:1": 200} and report.removed_segments == 1
    stats = _assert_answers_are_the_records(store)
    assert (stats["bad_lines"], stats["indexed"], stats["from_records"]) == (0, 200, 0)


def test_a_failed_append_is_a_store_error_and_the_run_still_loads(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.put_record(_record(1))
    # The experiment's index directory replaced by a file: appends cannot open it.
    directory = store.layout.index_experiment_dir("e:1")
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    directory.write_bytes(b"")
    writer = FileStore(store.root)
    with pytest.raises(StoreError, match="results index segment"):
        writer.put_record(_record(2))
    directory.unlink()
    data, problems = writer.load_columns()
    assert data["run_id"] == [f"{1:032x}", f"{2:032x}"] and not problems
