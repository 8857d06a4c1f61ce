"""FileStore: a human-browsable directory of JSON records, safe for many writers.

Every file is replaced atomically (temporary sibling + rename), and markers are written
only after the record they vouch for, so a kill at any instant leaves the store readable
and resumable. No locks are needed: each run writes only its own files, and two writers of
the same run both produce complete files (the last rename wins).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from metalab import _core
from metalab.errors import StoreError, UnsafeNameError
from metalab.records import ArtifactInfo, RunRecord, RunState, StoredState
from metalab.store.atomic import STALE_FOREIGN_AGE, SweepReport, atomic_write, sweep_temporaries
from metalab.store.base import LoadedRecords, LoadProblem, Store, select_manifests
from metalab.store.claims import FileClaims
from metalab.store.file_bundles import FileBundles
from metalab.store.index_segments import ReindexReport, SegmentWriter, reindex
from metalab.store.layout import (
    MANIFEST_SUFFIX,
    RECORD_SUFFIX,
    FileLayout,
    NoFollowReader,
    check_run_id,
    shard_of,
)
from metalab.store.record_codec import decode_record, encode_record_and_summary
from metalab.trust import read_trusted

#: A whole load through the index that listed at least this many record files saves its
#: answer as the column snapshot, which answers the next loads while no record changes
#: (300,000 runs: ~2.7 s through the segments, ~1 s from the snapshot). Below it, the
#: segments are fast enough and a snapshot would only be another file to write.
SNAPSHOT_MIN_RECORDS = 20_000

__all__ = ["FileStore"]

# What the Rust scan answers for (done, failed, absent): the enum members themselves, so no
# per-run conversion is needed in Python.
_LABELS = (StoredState.DONE, StoredState.FAILED, StoredState.ABSENT)


def _readable(paths: Iterable[Path]) -> Iterator[bytes]:
    """Contents of the given files, skipping any that vanish or cannot be read."""
    for path in sorted(paths):
        try:
            yield path.read_bytes()
        except OSError:
            continue


class _FileLogSink:
    """Appends each line and flushes it, so a crash keeps every line logged so far."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write_line(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


@contextlib.contextmanager
def _as_store_error(what: str, path: Path) -> Iterator[None]:
    """An OS-level write failure (disk full, read-only) of launch bookkeeping as a StoreError."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot write the {what} {str(path)!r}: {exc}", path=str(path)) from exc


class FileStore(FileBundles, FileClaims, Store):
    """Store runs under a directory; the layout is documented in ``docs/storage.md``.

    Args:
        root: directory of the store (created on first write).
        durable: fsync every file and rename (survives power loss, not only crashes).
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"FileStore root {str(self.root)!r} exists and is not a directory",
                path=str(self.root),
            )
        self.layout = FileLayout(self.root)
        self.durable = durable
        #: Counts of the last index-backed ``load_columns`` (segments, lines, bad lines,
        #: runs answered by the index and from records), for diagnostics and benches.
        self.last_index_stats: dict[str, int] = {}
        #: Seconds per stage of the last index-backed ``load_columns`` (read_segments,
        #: parse_lines, ...: ``(wall, process CPU)``; see ``rust/src/index.rs``).
        self.last_index_seconds: dict[str, tuple[float, float]] = {}

    @property
    def locator(self) -> str:
        """``file:///absolute/path``."""
        return self.root.as_uri()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def _write(self, path: str | Path, data: bytes) -> os.stat_result:
        return atomic_write(path, data, durable=self.durable)

    @property
    def index(self) -> SegmentWriter:
        """This process's appender to the results index (see ``index_segments``)."""
        writer = self.__dict__.get("_index")
        if writer is None:
            writer = self.__dict__["_index"] = SegmentWriter(self.layout)
        return writer

    def _touch(self, path: str) -> None:
        # An empty marker needs no temporary file: creating it is already all-or-nothing
        # (there is no content to see half-written), which saves a rename per run.
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
        try:
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.durable:
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- experiments ------------------------------------------------------------------
    def put_manifest(self, experiment_id: str, manifest: dict[str, Any]) -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.layout.manifest(experiment_id, stamp)
        with _as_store_error("manifest", path):
            self._write(path, json.dumps(manifest, indent=2, default=str).encode())
        return str(path)

    def list_manifests(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        directory = self.layout.experiments_dir
        if not directory.is_dir():
            return []
        return select_manifests(_readable(directory.glob(f"*{MANIFEST_SUFFIX}")), experiment_id)

    def put_blob(self, key: str, data: bytes) -> None:
        # Blobs carry pickled code (operations shipped by value): owner-only from creation.
        path = self.layout.blob(key)
        with _as_store_error("blob", path):
            atomic_write(path, data, mode=0o600, durable=self.durable)

    def get_blob(self, key: str) -> bytes | None:
        """Return a blob, refusing one that someone else could have written.

        Workers unpickle operations from blobs, so a blob owned by another user or
        writable by group/others would let them run code in your account.

        Raises:
            UntrustedFileError: the blob is a symlink, foreign-owned or group/other-writable.
        """
        return read_trusted(self.layout.blob(key), "blob")

    # -- run write path ---------------------------------------------------------------
    def open_log(self, run_id: str) -> _FileLogSink:
        return _FileLogSink(self.layout.log(run_id))

    def put_artifact(
        self, run_id: str, name: str, data: bytes, kind: str, ext: str, meta: dict[str, Any]
    ) -> ArtifactInfo:
        file_name = f"{name}{ext}"
        path = self.layout.artifact(run_id, file_name)
        self._write(path, data)
        return ArtifactInfo(name=name, kind=kind, file=file_name, size=len(data), meta=meta)

    def put_record(self, record: RunRecord) -> None:
        """Write the record, then its summary line to the results index.

        Raises:
            StoreError: the index line cannot be appended (the record is in place and
                loading reads it; ``metalab store reindex`` restores the line).
        """
        path = self.layout.record_text(record.run_id)
        # The record and its summary line from one encoding (encoded twice, the summary
        # was a visible share of a ThreadExecutor run's cost).
        data, summary_json = encode_record_and_summary(record)
        written: os.stat_result | None = self._write(path, data)
        if written is None:
            # A wrapped _write (tests inject faults this way) may not hand the identity
            # back: the file just written has it.
            written = os.stat(path)
        self.index.append(record, written, durable=self.durable, summary_json=summary_json)

    def mark(self, run_id: str, state: RunState) -> None:
        layout = self.layout
        done, failed = layout.done_marker_text(run_id), layout.failed_marker_text(run_id)
        if state is RunState.SUCCESS:
            self._touch(done)
            _unlink_quietly(failed)
        elif state in (RunState.FAILED, RunState.CANCELLED):
            self._write(failed, state.value.encode())
            _unlink_quietly(done)

    # -- completion -------------------------------------------------------------------
    def states(self, run_ids: Sequence[str]) -> list[StoredState]:
        """Done (done marker AND record file), failed (failure marker) or absent, per run.

        A marker whose record was deleted vouches for nothing: that run is not done (so
        resume runs it again) and loading results reports it. One batched Rust scan
        answers all three (it hands back the very enum members given as labels).
        """
        states, _orphans = _core.scan_states(self.layout.scan, list(run_ids), _LABELS)
        return states

    # -- read path --------------------------------------------------------------------
    def get_record(self, run_id: str) -> RunRecord | None:
        path = self.layout.record(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return decode_record(data, str(path), run_id)

    def _record_paths(self, run_ids: Iterable[str] | None) -> list[Path]:
        if run_ids is not None:
            return [self.layout.record(run_id) for run_id in run_ids]
        runs_dir = self.layout.runs_dir
        if not runs_dir.is_dir():
            return []
        paths = []
        for shard in sorted(os.scandir(runs_dir), key=lambda e: e.name):
            if shard.is_dir() and not shard.name.startswith("."):
                for entry in os.scandir(shard.path):
                    if FileLayout.run_id_of_record(entry.name) is not None:
                        paths.append(Path(entry.path))
        return paths

    def load_records(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> LoadedRecords:
        loaded = LoadedRecords()
        paths = self._record_paths(run_ids)
        missing: list[str] = []
        for path in paths:
            stored_as = path.name.removesuffix(RECORD_SUFFIX)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                missing.append(stored_as)
                continue
            except OSError as exc:
                loaded.problems.append(LoadProblem(str(path), f"unreadable: {exc}"))
                continue
            try:
                record = decode_record(data, str(path), stored_as)
            except StoreError as exc:
                loaded.problems.append(LoadProblem(str(path), str(exc)))
                self._forget_completion(stored_as)
                continue
            if experiment_id is None or record.experiment_id == experiment_id:
                loaded.records.append(record)
        if run_ids is None:
            listed = {path.name.removesuffix(RECORD_SUFFIX) for path in paths}
            missing = [r for r in _core.list_done(self.layout.scan) if r not in listed]
        loaded.problems += self._missing_records(missing)
        return loaded

    def _missing_records(self, candidates: list[str]) -> list[LoadProblem]:
        """Problems for runs among ``candidates`` (no record seen) that have a done marker.

        Markers are listed after the records were read, and a record is in place before
        its marker is created: a marker without a record is an orphan unless the run
        finished in between, which a second look at the record file tells apart. Worded
        as the Rust column loader words it.
        """
        if not candidates:
            return []
        problems = []
        for run_id, marked in zip(
            candidates, _core.scan_done(self.layout.scan, candidates), strict=True
        ):
            record = self.layout.record(run_id)
            if marked and not os.path.lexists(record):
                marker = self.layout.done_marker(run_id)
                problems.append(
                    LoadProblem(
                        str(record),
                        f"{record}: record missing: done marker {marker} says run {run_id} "
                        f"finished, but its record file is gone (deleted?); the run does not "
                        f"count as done and resume runs it again",
                    )
                )
        return problems

    def load_columns(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> tuple[dict[str, Any], list[LoadProblem]]:
        """Read records as columns in one parallel Rust call (see ``metalab.column_table``).

        Corrupt records are reported like :meth:`load_records` does, and lose their done
        marker so resume re-runs them. A done marker without its record is reported too
        (the marker stays, so the problem stays visible until the run executes again;
        :meth:`completed` already ignores it).
        """
        ids = list(run_ids) if run_ids is not None else None
        segments = self.layout.segments()
        if segments:
            # The results index answers every run whose record file is the version a
            # line summarises; the others are read from their records in the same call.
            data = _core.load_index_columns(
                self.layout.scan,
                segments,
                experiment_id,
                ids,
                snapshot=self._snapshot_path(experiment_id) if ids is None else None,
                snapshot_min_records=SNAPSHOT_MIN_RECORDS,
            )
            stats = data.pop("index_stats")
            self.last_index_seconds = stats.pop("seconds")
            self.last_index_stats = stats
        else:
            data = _core.load_record_columns(self.layout.scan, ids, experiment_id)
            self.last_index_stats = {}
            self.last_index_seconds = {}
        problems = []
        for location, reason, corrupt in data.pop("problems"):
            problems.append(LoadProblem(location, reason))
            if corrupt:
                run_id = FileLayout.run_id_of_record(Path(location).name)
                if run_id is not None:
                    self._forget_completion(run_id)
        return data, problems

    def plan_states(
        self, experiment_id: str, run_set_key: str, run_ids: Sequence[str], *, keep: bool
    ) -> list[StoredState]:
        """:meth:`states`, keeping a done proof (``metalab.store.done_proof``) when every
        run is done and ``keep``; a subclass answering states otherwise keeps none."""
        if type(self).states is not FileStore.states:
            return self.states(run_ids)
        from metalab.store.done_proof import DoneProof

        return DoneProof(self, experiment_id, run_set_key).states(run_ids, keep=keep)

    def still_all_done(self, experiment_id: str, run_set_key: str) -> bool:
        """True when the done proof kept by :meth:`plan_states` still holds."""
        if type(self).states is not FileStore.states:
            return False
        from metalab.store.done_proof import DoneProof

        return DoneProof(self, experiment_id, run_set_key).holds()

    def _snapshot_path(self, experiment_id: str | None) -> Path | None:
        """Where a whole load of ``experiment_id`` keeps its column snapshot (``None``
        for an ID that names no index directory: such a load reads the segments)."""
        try:
            return self.layout.index_snapshot(experiment_id)
        except UnsafeNameError:
            return None

    def reindex(self, experiment_id: str | None = None) -> ReindexReport:
        """Rebuild the results index (of one experiment, or all) from the records.

        Raises:
            UnsafeNameError: ``experiment_id`` is not an experiment ID.
            StoreError: a segment cannot be written or removed.
        """
        return reindex(self.layout, self._record_paths(None), experiment_id)

    def _forget_completion(self, run_id: str) -> None:
        # A done marker must only vouch for a readable record; dropping it makes resume
        # re-run the damaged run instead of trusting it forever.
        self.layout.done_marker(run_id).unlink(missing_ok=True)

    def get_artifact(self, run_id: str, info: ArtifactInfo) -> bytes:
        """Return an artifact's bytes, read without following any link inside the store.

        Raises:
            KeyError: the artifact file is missing.
            UnsafeNameError: the record names a file outside the run's folder
                (``../../etc/passwd``), or the file (or a folder on the way) is a
                symbolic link: whoever can write the store could point it anywhere.
        """
        path = self.layout.artifact(run_id, info.file)
        with NoFollowReader(self.root) as reader:
            data = reader.read(path)
        if data is None:
            raise KeyError(f"artifact {info.name!r} of run {run_id} is missing: {path}")
        return data

    @property
    def directory(self) -> Path:
        """The store's root directory."""
        return self.root

    def clean_temporaries(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        dry_run: bool = False,
        max_age: float = STALE_FOREIGN_AGE,
    ) -> SweepReport:
        """Remove temporary files left by killed writers (see :mod:`metalab.store.atomic`).

        A temporary of a live writer is kept, as is one whose writer cannot be checked
        from this host (another node) until it is ``max_age`` seconds old.

        Args:
            run_ids: search only where these runs write (what a resume re-runs) plus
                manifests and blobs, instead of walking the whole store.
            dry_run: report what would be removed, remove nothing.
            max_age: seconds after which an uncheckable writer's temporary is stale.

        Raises:
            UnsafeNameError: an entry of ``run_ids`` is not a run ID.
        """
        if run_ids is None:
            return sweep_temporaries(
                self.root, self.layout.data_dirs, dry_run=dry_run, max_age=max_age
            )
        ids = {check_run_id(run_id) for run_id in run_ids}
        # One run per shard names the shard's directories (a Path per run would cost
        # more than the sweep itself at 100,000 runs). Done markers are created in place,
        # never through a temporary, so their shards (half the entries of a half-done
        # store) are left to the full sweep.
        shards = {shard_of(run_id): run_id for run_id in ids}
        tops = {self.layout.experiments_dir, self.layout.blobs_dir}
        for run_id in shards.values():
            tops.update(
                d for d in self.layout.shard_dirs(run_id) if d.parent != self.layout.done_dir
            )
        return sweep_temporaries(
            self.root,
            sorted(tops),
            descend=ids.__contains__,
            dry_run=dry_run,
            max_age=max_age,
        )

    def read_log(self, run_id: str) -> str:
        try:
            return self.layout.log(run_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def put_derived(self, run_id: str, values: dict[str, Any]) -> None:
        self._write(self.layout.derived(run_id), json.dumps(values, allow_nan=True).encode())

    def get_derived(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        root = self.layout.derived_dir
        if not root.is_dir():
            return found
        for run_id in run_ids:
            try:
                found[run_id] = json.loads(self.layout.derived(run_id).read_bytes())
            except FileNotFoundError:
                continue
            except ValueError:
                continue
        return found


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
