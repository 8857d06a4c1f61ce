"""The one place that knows every path of a store (see ``docs/storage.md``).

Run-keyed directories are sharded by the first two hex characters of the run ID, so no
directory holds more than ~1/256 of the runs (about 1,200 at 300,000 runs).

Every name that becomes part of a path — run IDs, artifact file names, experiment IDs,
manifest stamps, blob keys — is validated here, by the path builders themselves: names
read from a store (a JSON record, a database row, a directory listing) are written by
whoever can write the store, so ``../../x`` must never reach ``open``. A refused name
raises :class:`~metalab.errors.UnsafeNameError` (a ``ValueError``) naming it. Reads
that must not follow a symbolic link planted inside the store go through
:class:`~metalab.store.nofollow.NoFollowReader` (re-exported here).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from metalab import _core
from metalab.errors import UnsafeNameError
from metalab.store.nofollow import NoFollowReader

__all__ = [
    "CLAIM_SUFFIX",
    "DERIVED_SUFFIX",
    "DONE_SUFFIX",
    "FAILED_SUFFIX",
    "LOG_SUFFIX",
    "MANIFEST_SUFFIX",
    "RECORD_SUFFIX",
    "RUN_ID_HEX_CHARS",
    "SEGMENT_SUFFIX",
    "SHARD_WIDTH",
    "FileLayout",
    "NoFollowReader",
    "check_blob_key",
    "check_claim_owner",
    "check_experiment_id",
    "check_file_name",
    "check_run_id",
    "check_segment_name",
    "check_stamp",
    "is_run_id",
    "manifest_name",
    "parse_manifest_name",
    "run_id_of",
    "shard_of",
    "shared_artifact_relative",
]

#: Run IDs are ``hex(BLAKE2b-16(...))`` (docs/run-identity.md §3): exactly 32 lower-case
#: hex characters, and nothing else is ever generated.
RUN_ID_HEX_CHARS = 32
#: Run-keyed directories are sharded by this many leading characters of the run ID.
SHARD_WIDTH = 2
#: File-name suffixes of the files of a run (and of manifests); the Rust scanners get them
#: from here (``FileLayout.scan``), so these are the only spelling of each.
RECORD_SUFFIX = ".json"
LOG_SUFFIX = ".log"
DONE_SUFFIX = ".done"
FAILED_SUFFIX = ".failed"
DERIVED_SUFFIX = ".json"
MANIFEST_SUFFIX = ".json"
#: Run claims (``metalab.store.claims``): ``claims/{shard}/{run_id}.claim``.
CLAIM_SUFFIX = ".claim"
#: Segments of the results index: ``index/{experiment_id}/{writer}.seg``.
SEGMENT_SUFFIX = ".seg"
#: The column snapshot of a whole load: ``index/{experiment_id}/columns.snapshot`` (one
#: experiment's load) or ``index/columns.snapshot`` (a load of every experiment).
SNAPSHOT_NAME = "columns.snapshot"
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# Artifact files are ``{name}{ext}`` with names checked by capture.check_artifact_name
# (1-128 characters); 255 is the file-name limit of common file systems.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
# An experiment ID is "{name}:{version}", each checked by Experiment (1-128 characters).
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
_EXPERIMENT_ID = re.compile(rf"{_TOKEN}:{_TOKEN}")
_STAMP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_BLOB_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}")
# A claim's owner: a writer token (metalab.store.atomic) and 8 hex naming the launch.
_CLAIM_OWNER = re.compile(
    r"[A-Za-z0-9_\-]{1,40}\.[0-9]{1,10}\.[0-9a-f]{8}-[0-9]{1,20}\.[0-9a-f]{8}"
)
# A segment is named after its writer (metalab.store.atomic.writer_token: host, PID,
# scope-start), or ``reindex-{writer}`` when `metalab store reindex` built it.
_SEGMENT = re.compile(r"(?:reindex-)?[A-Za-z0-9_\-]{1,40}\.[0-9]{1,10}\.[0-9a-f]{8}-[0-9]{1,20}")


def _refuse(what: str, name: object, expected: str) -> UnsafeNameError:
    return UnsafeNameError(
        f"refusing {what} {name!r} as a file name: expected {expected} (a name from a store "
        f"that does not match could point outside it)",
        name=str(name),
    )


def is_run_id(name: object) -> bool:
    """Whether ``name`` has the exact form of a metalab run ID (32 lower-case hex)."""
    return isinstance(name, str) and _RUN_ID.fullmatch(name) is not None


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it has the exact form metalab generates.

    Raises:
        UnsafeNameError: anything but 32 lower-case hex characters.
    """
    if is_run_id(run_id):
        return run_id  # type: ignore[return-value]
    raise _refuse("run ID", run_id, f"{RUN_ID_HEX_CHARS} lower-case hex characters")


def _check(pattern: re.Pattern[str], what: str, name: object, expected: str) -> str:
    if isinstance(name, str) and pattern.fullmatch(name) and ".." not in name:
        return name
    raise _refuse(what, name, expected)


def check_file_name(file_name: object) -> str:
    """Return an artifact file name if it is one plain, safe file name.

    Raises:
        UnsafeNameError: empty, over 255 characters, a character other than letters,
            digits, ``_ . -``, a leading ``.``/``-``/``_``, or ``..`` anywhere.
    """
    return _check(
        _FILE_NAME,
        "artifact file name",
        file_name,
        "1-255 letters, digits, '_', '.', '-' starting with a letter or digit, no '..'",
    )


def check_experiment_id(experiment_id: object) -> str:
    """Return an experiment ID of the form ``name:version`` (as Experiment validates).

    Raises:
        UnsafeNameError: not two path-safe tokens of 1-128 characters joined by ``:``.
    """
    return _check(
        _EXPERIMENT_ID,
        "experiment ID",
        experiment_id,
        "'name:version', each 1-128 letters, digits, '_', '.', '-', no '..'",
    )


def check_segment_name(writer: object) -> str:
    """Return a results-index segment's writer name if it has the form metalab writes.

    Raises:
        UnsafeNameError: not ``[reindex-]{host}.{pid}.{scope}-{start}``.
    """
    return _check(_SEGMENT, "index segment", writer, "'[reindex-]{host}.{pid}.{scope8hex}-{start}'")


def check_claim_owner(owner: object) -> str:
    """Return a run claim's owner name if it has the form ``metalab.store.claims`` makes.

    Raises:
        UnsafeNameError: not ``{host}.{pid}.{scope}-{start}.{8 hex}``.
    """
    return _check(
        _CLAIM_OWNER, "claim owner", owner, "'{host}.{pid}.{scope8hex}-{start}.{launch8hex}'"
    )


def check_stamp(stamp: object) -> str:
    """Return a manifest time stamp (e.g. ``20260101T120000123456Z``) if it is path-safe.

    Raises:
        UnsafeNameError: not 1-64 letters, digits, ``_ . -`` or contains ``..``.
    """
    return _check(_STAMP, "manifest stamp", stamp, "1-64 letters, digits, '_', '.', '-'")


def check_blob_key(key: object) -> str:
    """Return a blob key if it is a path-safe name.

    Raises:
        UnsafeNameError: not 1-200 letters, digits, ``_ . : -`` or contains ``..``.
    """
    return _check(_BLOB_KEY, "blob key", key, "1-200 letters, digits, '_', '.', ':', '-'")


def shard_of(run_id: str) -> str:
    """The shard directory name of a run ID: its first :data:`SHARD_WIDTH` characters.

    Raises:
        UnsafeNameError: ``run_id`` is not a run ID.
    """
    return check_run_id(run_id)[:SHARD_WIDTH]


def run_id_of(file_name: str, suffix: str) -> str | None:
    """The run ID of a run-keyed file name ``{run_id}{suffix}``, or ``None`` for any other.

    Only names made of a valid run ID count, so a stray ``notes.json`` or a planted
    ``..json`` is never taken for a run's file.
    """
    if file_name.endswith(suffix):
        run_id = file_name[: -len(suffix)]
        if is_run_id(run_id):
            return run_id
    return None


def shared_artifact_relative(schema: str, run_id: str, file_name: str) -> str:
    """``{schema}/{shard}/{id}/{file}``: a PostgreSQL artifact's path under artifact_root.

    Raises:
        UnsafeNameError: an invalid run ID, file name or schema.
    """
    check_file_name(file_name)
    _check(_STAMP, "schema", schema, "a plain identifier")
    return f"{schema}/{shard_of(run_id)}/{run_id}/{file_name}"


def manifest_name(experiment_id: str, stamp: str) -> str:
    """``{experiment_id}_{stamp}.json``: the name of a manifest (validated).

    Raises:
        UnsafeNameError: an invalid experiment ID or stamp.
    """
    return f"{check_experiment_id(experiment_id)}_{check_stamp(stamp)}{MANIFEST_SUFFIX}"


def parse_manifest_name(file_name: str, experiment_id: str | None) -> tuple[str, str] | None:
    """``(experiment_id, stamp)`` of a manifest file name, or ``None`` if it is not one.

    Both parts may hold ``_``, so the split is ambiguous; ``experiment_id`` (from the
    document inside, when it has one) picks the split that matches it, else the last
    ``_`` splits. Names are returned unvalidated (they come from a listing).
    """
    if not file_name.endswith(MANIFEST_SUFFIX) or file_name.startswith("."):
        return None
    stem = file_name[: -len(MANIFEST_SUFFIX)]
    if experiment_id and stem.startswith(experiment_id + "_"):
        return experiment_id, stem[len(experiment_id) + 1 :]
    exp, _, stamp = stem.rpartition("_")
    return exp, stamp


@dataclass(frozen=True)
class FileLayout:
    """Paths of a FileStore rooted at ``root``; every builder validates its names."""

    root: Path

    @staticmethod
    def shard(run_id: str) -> str:
        """Return the shard directory name of a run ID (see :func:`shard_of`)."""
        return shard_of(run_id)

    @cached_property
    def _root_text(self) -> str:
        # Without a trailing separator, so the root "/" gives "/runs/...", not "//runs".
        return os.fspath(self.root).rstrip(os.sep)

    def _in_shard_text(self, top: str, run_id: str, suffix: str) -> str:
        # The one path rule of run-keyed files: {top}/{shard}/{run_id}{suffix}, as text
        # (pathlib's joins were a visible share of a run's Python time).
        sep = os.sep
        return f"{self._root_text}{sep}{top}{sep}{shard_of(run_id)}{sep}{run_id}{suffix}"

    def _in_shard(self, top: str, run_id: str, suffix: str) -> Path:
        return Path(self._in_shard_text(top, run_id, suffix))

    def record_text(self, run_id: str) -> str:
        """:meth:`record` as text (for the write path: no pathlib)."""
        return self._in_shard_text("runs", run_id, RECORD_SUFFIX)

    def done_marker_text(self, run_id: str) -> str:
        """:meth:`done_marker` as text."""
        return self._in_shard_text("done", run_id, DONE_SUFFIX)

    def failed_marker_text(self, run_id: str) -> str:
        """:meth:`failed_marker` as text."""
        return self._in_shard_text("failed", run_id, FAILED_SUFFIX)

    @property
    def experiments_dir(self) -> Path:
        """Directory of timestamped experiment manifests."""
        return self.root / "experiments"

    def manifest(self, experiment_id: str, timestamp: str) -> Path:
        """``experiments/{experiment_id}_{timestamp}.json``."""
        return self.experiments_dir / manifest_name(experiment_id, timestamp)

    @property
    def blobs_dir(self) -> Path:
        """Directory of small named blobs (experiment specs)."""
        return self.root / "blobs"

    def blob(self, key: str) -> Path:
        """Path of the blob ``key`` (validated to stay inside the store)."""
        return self.blobs_dir / check_blob_key(key)

    @property
    def runs_dir(self) -> Path:
        """Directory of run records, logs and artifact folders, sharded."""
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}/``: the run's artifacts (created only when it has some)."""
        return self.root.joinpath("runs", shard_of(run_id), run_id)

    def record(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}.json``: the run's record.

        Records sit directly in the shard directory, not in a per-run directory: creating
        a directory costs several times more than creating a file on common file systems,
        and most runs have no artifacts.
        """
        return self._in_shard("runs", run_id, RECORD_SUFFIX)

    @staticmethod
    def run_id_of_record(file_name: str) -> str | None:
        """The run ID of a record file name, or ``None`` for anything else.

        Only names made of a valid run ID count, so a stray ``notes.json`` or a planted
        ``..json`` is never taken for a record.
        """
        return run_id_of(file_name, RECORD_SUFFIX)

    def log(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}.log``: the run's log."""
        return self._in_shard("runs", run_id, LOG_SUFFIX)

    def artifact(self, run_id: str, file_name: str) -> Path:
        """``runs/{id[:2]}/{id}/{file}``: an artifact file of the run."""
        return self.run_dir(run_id) / check_file_name(file_name)

    @property
    def done_dir(self) -> Path:
        """Root of success markers ``done/{id[:2]}/{id}.done``."""
        return self.root / "done"

    def done_marker(self, run_id: str) -> Path:
        """The success marker of a run."""
        return self._in_shard("done", run_id, DONE_SUFFIX)

    @property
    def failed_dir(self) -> Path:
        """Root of failure markers ``failed/{id[:2]}/{id}.failed``."""
        return self.root / "failed"

    def failed_marker(self, run_id: str) -> Path:
        """The failure marker of a run."""
        return self._in_shard("failed", run_id, FAILED_SUFFIX)

    @property
    def derived_dir(self) -> Path:
        """Root of derived metrics ``derived/{id[:2]}/{id}.json``."""
        return self.root / "derived"

    def derived(self, run_id: str) -> Path:
        """The derived-metrics file of a run."""
        return self._in_shard("derived", run_id, DERIVED_SUFFIX)

    @property
    def claims_dir(self) -> Path:
        """Root of run claims ``claims/{id[:2]}/{id}.claim`` (see ``store/claims.py``)."""
        return self.root / "claims"

    def claim(self, run_id: str) -> Path:
        """The claim file of a run (created with ``O_EXCL`` by the launch executing it)."""
        return self._in_shard("claims", run_id, CLAIM_SUFFIX)

    def claim_taking(self, run_id: str, inode: int) -> Path:
        """``claims/{shard}/.{run_id}.{inode}.taking``: the link that makes one taker of
        a lost claim (the claim file with that inode) the only one."""
        if isinstance(inode, bool) or not isinstance(inode, int) or inode < 0:
            raise _refuse("claim inode", inode, "a non-negative int")
        return self.root.joinpath("claims", shard_of(run_id), f".{run_id}.{inode}.taking")

    @property
    def index_dir(self) -> Path:
        """Root of the results index: ``index/{experiment_id}/{writer}.seg``."""
        return self.root / "index"

    def index_experiment_dir(self, experiment_id: str) -> Path:
        """``index/{experiment_id}/``: the segments of one experiment (validated)."""
        return self.index_dir / check_experiment_id(experiment_id)

    def index_snapshot(self, experiment_id: str | None) -> Path:
        """The column snapshot of a load of ``experiment_id`` (``None``: of every
        experiment), written by the load itself (see ``rust/src/index/snapshot.rs``)."""
        if experiment_id is None:
            return self.index_dir / SNAPSHOT_NAME
        return self.index_experiment_dir(experiment_id) / SNAPSHOT_NAME

    def segment(self, experiment_id: str, writer: str) -> Path:
        """``index/{experiment_id}/{writer}.seg``: one writer's segment of an experiment."""
        name = check_segment_name(writer) + SEGMENT_SUFFIX
        return self.index_experiment_dir(experiment_id) / name

    def segments(self, experiment_id: str | None = None) -> list[Path]:
        """The segment files of one experiment (default: of all), sorted; hidden entries
        (a reindex's temporaries), links and names metalab does not write are skipped."""
        if experiment_id is not None:
            dirs = [self.index_experiment_dir(experiment_id)]
        else:
            try:
                with os.scandir(self.index_dir) as entries:
                    dirs = sorted(Path(e.path) for e in entries if _listable_dir(e))
            except (FileNotFoundError, NotADirectoryError):
                return []
        found: list[Path] = []
        for directory in dirs:
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        stem = entry.name.removesuffix(SEGMENT_SUFFIX)
                        if (
                            stem != entry.name
                            and _SEGMENT.fullmatch(stem)
                            and entry.is_file(follow_symlinks=False)
                        ):
                            found.append(Path(entry.path))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return sorted(found)

    def run_names(
        self, top: Path, suffix: str | None = None, shards: Iterable[str] | None = None
    ) -> set[str]:
        """Names of the run-keyed files under ``top`` (a sharded directory), unvalidated.

        ``{name}{suffix}`` files give ``name`` (with ``suffix=None``: any file, minus its
        last extension). Only the given ``shards`` are listed (default: every one); a
        hidden entry (a writer's temporary) or a symbolic-linked shard is never listed.
        The names come from a listing, so a caller validates them before use.
        """
        names: set[str] = set()
        if shards is None:
            try:
                with os.scandir(top) as entries:
                    dirs = [e.path for e in entries if _listable_dir(e)]
            except (FileNotFoundError, NotADirectoryError):
                return names
        else:
            dirs = [str(top / shard) for shard in shards]
        for directory in dirs:
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        name = entry.name
                        if name.startswith("."):
                            continue
                        if suffix is None:
                            names.add(name.rsplit(".", 1)[0])
                        elif name.endswith(suffix):
                            names.add(name[: -len(suffix)])
            except (FileNotFoundError, NotADirectoryError):
                continue
        return names

    def shard_dirs(self, run_id: str) -> tuple[Path, ...]:
        """The directories holding a run's files: its shard of runs, done, failed, derived."""
        shard = shard_of(run_id)
        return tuple(top / shard for top in self.data_dirs[2:])

    @cached_property
    def scan(self) -> _core.ScanLayout:
        """This layout as the Rust scanners take it (built once per layout).

        The scanners (``_core.scan_states``, ``load_record_columns``, ...) know no
        directory name, suffix or shard rule of their own: each comes from here.
        """
        return _core.ScanLayout(
            runs_dir=self.runs_dir,
            done_dir=self.done_dir,
            failed_dir=self.failed_dir,
            record_suffix=RECORD_SUFFIX,
            done_suffix=DONE_SUFFIX,
            failed_suffix=FAILED_SUFFIX,
            shard_width=SHARD_WIDTH,
        )

    @property
    def data_dirs(self) -> tuple[Path, ...]:
        """Every directory metalab writes data files into (``services/`` is not one)."""
        return (
            self.experiments_dir,
            self.blobs_dir,
            self.runs_dir,
            self.done_dir,
            self.failed_dir,
            self.derived_dir,
        )


def _listable_dir(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
