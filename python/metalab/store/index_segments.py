"""The results index of a FileStore: append-only summary segments, one per writer.

Reading 300,000 record files costs 300,000 opens (41.6 s with a cold page cache here);
the index answers the same column table from a few files. ``FileStore.put_record``
appends one line per record to ``index/{experiment_id}/{writer}.seg`` (the writer is
this process, see :func:`metalab.store.atomic.writer_token`), after the record file is
in place: the records stay the source of truth. A line is::

    {sum} {run_id} {ino} {mtime_ns} {size} {summary JSON}\\n

``sum`` is the hex BLAKE2b-8 of the rest of the line (a torn or corrupted line is
ignored), ``ino mtime_ns size`` the identity of the record file version the line
summarises (a line counts only while the record file is exactly that version, so a
rerun, an edit or a deletion is never answered from a stale line), and the summary is
the record document without its heavy parts (stepped series, provenance, artifacts,
traceback). Loading (``_core.load_index_columns``) reads the segments in one batched
call and reads the record of every run no line matches. The format and its guarantees
are in ``docs/storage.md`` ("Results index").
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalab import _core
from metalab.errors import StoreError
from metalab.records import RunRecord
from metalab.store.atomic import atomic_write, writer_token
from metalab.store.layout import FileLayout, check_experiment_id
from metalab.store.record_codec import decode_record, summary_of_document

__all__ = ["ReindexReport", "SegmentWriter", "reindex", "summary_line", "summary_line_of"]


def summary_line(summary: dict[str, Any], written: os.stat_result) -> bytes:
    """One segment line for ``summary`` of the record file whose ``fstat`` is ``written``.

    ``default=str`` as in :func:`~metalab.store.record_codec.encode_record`, so a param
    the record holds as text is held the same way here.
    """
    doc = json.dumps(summary, allow_nan=False, default=str, separators=(",", ":"))
    return summary_line_of(summary["run_id"], doc, written)


def summary_line_of(run_id: str, summary_json: str, written: os.stat_result) -> bytes:
    """The segment line of a summary already encoded (one line of JSON)."""
    body = f"{run_id} {written.st_ino} {written.st_mtime_ns} {written.st_size} {summary_json}"
    data = body.encode()
    return _core.index_checksum(data).encode() + b" " + data + b"\n"


class SegmentWriter:
    """Appends summary lines to this process's segments of one store.

    One ``write`` per line on an ``O_APPEND`` descriptor (other processes append to
    their own segments; a lock keeps this process's threads from interleaving). A
    forked child gets segments of its own (its writer name differs), never its
    parent's descriptors.
    """

    def __init__(self, layout: FileLayout) -> None:
        self._layout = layout
        self._lock = threading.Lock()
        self._pid = -1
        self._fds: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A store crosses into worker processes by pickle: descriptors and the lock
        # stay here, the copy opens its own segments.
        return {"layout": self._layout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["layout"])  # type: ignore[misc]

    def _fd(self, experiment_id: str) -> int:
        if self._pid != os.getpid():
            # Inherited descriptors are the parent's segments: drop them (unclosed,
            # the parent still uses them).
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(experiment_id)
        if fd is None:
            path = self._layout.segment(experiment_id, writer_token())
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(path, flags, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, flags, 0o644)
            self._fds[experiment_id] = fd
        return fd

    def append(
        self,
        record: RunRecord,
        written: os.stat_result,
        *,
        durable: bool,
        summary_json: str,
    ) -> None:
        """Append the summary line of ``record``, whose record file ``written`` describes
        (``summary_json``: its summary, encoded with the record by
        :func:`~metalab.store.record_codec.encode_record_and_summary`).

        Raises:
            StoreError: the segment cannot be written (the record is in place: loading
                reads it instead, until ``metalab store reindex``).
        """
        line = summary_line_of(record.run_id, summary_json, written)
        with self._lock:
            try:
                fd = self._fd(record.experiment_id)
                view = memoryview(line)
                while view:
                    # A short write leaves a torn line, which its checksum rejects.
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            except OSError as exc:
                path = self._layout.segment(record.experiment_id, writer_token())
                raise StoreError(
                    f"cannot append run {record.run_id} to the results index segment "
                    f"{str(path)!r}: {exc} (the record itself is written; loading reads it)",
                    path=str(path),
                ) from exc

    def close(self) -> None:
        """Close this process's segment descriptors."""
        with self._lock:
            if self._pid == os.getpid():
                for fd in self._fds.values():
                    os.close(fd)
            self._fds = {}


@dataclass
class ReindexReport:
    """What :func:`reindex` did."""

    experiments: dict[str, int] = field(default_factory=dict)
    """Runs indexed per experiment."""
    removed_segments: int = 0
    skipped: list[str] = field(default_factory=list)
    """Record files not indexed (unreadable or corrupt: loading reports them)."""


def _read_record(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes of a record file and the identity of exactly that version, or ``None``
    when it vanished or changed while being read (a writer replaced it)."""
    try:
        with open(path, "rb") as handle:
            before = os.fstat(handle.fileno())
            data = handle.read()
            after = os.fstat(handle.fileno())
    except FileNotFoundError:
        return None
    if (before.st_mtime_ns, before.st_size) != (after.st_mtime_ns, after.st_size):
        return None
    return data, after


def reindex(
    layout: FileLayout, record_paths: Iterable[Path], experiment_id: str | None = None
) -> ReindexReport:
    """Rebuild the segments (of one experiment, or all) from the record files.

    Per experiment, the new segment is written under a temporary name and renamed into
    place, and only then are the segments listed before the rebuild removed: a reader
    sees the old segments, both (lines of one record version agree), or the new one.
    Runs written while this runs may lose their line (a removed live segment); they
    load from their records and are indexed again by the next reindex.

    Raises:
        UnsafeNameError: ``experiment_id`` is not an experiment ID.
        StoreError: a segment cannot be written or removed.
    """
    if experiment_id is not None:
        check_experiment_id(experiment_id)
    old = layout.segments(experiment_id)
    lines: dict[str, list[bytes]] = {}
    report = ReindexReport()
    for path in record_paths:
        stored_as = FileLayout.run_id_of_record(path.name)
        read = _read_record(path) if stored_as is not None else None
        if read is None:
            continue
        data, written = read
        try:
            record = decode_record(data, str(path), stored_as)
        except StoreError:
            report.skipped.append(str(path))
            continue
        if experiment_id is not None and record.experiment_id != experiment_id:
            continue
        document = json.loads(data)
        line = summary_line(summary_of_document(document), written)
        lines.setdefault(record.experiment_id, []).append(line)
    name = "reindex-" + writer_token()
    written_paths = set()
    for exp, chunk in sorted(lines.items()):
        target = layout.segment(exp, name)
        try:
            atomic_write(target, b"".join(chunk))
        except OSError as exc:
            raise StoreError(
                f"cannot write the index segment {str(target)!r}: {exc}", path=str(target)
            ) from exc
        written_paths.add(target)
        report.experiments[exp] = len(chunk)
    for path in old:
        if path in written_paths:
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot remove the old index segment {str(path)!r}: {exc}", path=str(path)
            ) from exc
        report.removed_segments += 1
    return report
