"""The one place that knows every path of a store (see ``docs/storage.md``).

Run-keyed directories are sharded by the first two hex characters of the run ID, so no
directory holds more than ~1/256 of the runs (about 1,200 at 300,000 runs).

Every name that becomes part of a path — run IDs, artifact file names, experiment IDs,
manifest stamps, blob keys — is validated here, by the path builders themselves: names
read from a store (a JSON record, a database row, a directory listing) are written by
whoever can write the store, so ``../../x`` must never reach ``open``. A refused name
raises :class:`~metalab.errors.UnsafeNameError` (a ``ValueError``) naming it. Reads
that must not follow a symbolic link planted inside the store go through
:class:`NoFollowReader`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from metalab.errors import UnsafeNameError

__all__ = [
    "RUN_ID_HEX_CHARS",
    "FileLayout",
    "NoFollowReader",
    "check_blob_key",
    "check_experiment_id",
    "check_file_name",
    "check_run_id",
    "check_stamp",
    "is_run_id",
    "shared_artifact_relative",
]

#: Run IDs are ``hex(BLAKE2b-16(...))`` (docs/run-identity.md §3): exactly 32 lower-case
#: hex characters, and nothing else is ever generated.
RUN_ID_HEX_CHARS = 32
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# Artifact files are ``{name}{ext}`` with names checked by capture.check_artifact_name
# (1-128 characters); 255 is the file-name limit of common file systems.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
# An experiment ID is "{name}:{version}", each checked by Experiment (1-128 characters).
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
_EXPERIMENT_ID = re.compile(rf"{_TOKEN}:{_TOKEN}")
_STAMP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_BLOB_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}")


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


def shared_artifact_relative(schema: str, run_id: str, file_name: str) -> str:
    """``{schema}/{id[:2]}/{id}/{file}``: a PostgreSQL artifact's path under artifact_root.

    Raises:
        UnsafeNameError: an invalid run ID, file name or schema.
    """
    check_run_id(run_id)
    check_file_name(file_name)
    _check(_STAMP, "schema", schema, "a plain identifier")
    return f"{schema}/{run_id[:2]}/{run_id}/{file_name}"


@dataclass(frozen=True)
class FileLayout:
    """Paths of a FileStore rooted at ``root``; every builder validates its names."""

    root: Path

    @staticmethod
    def shard(run_id: str) -> str:
        """Return the shard directory name of a run ID."""
        return check_run_id(run_id)[:2]

    @property
    def experiments_dir(self) -> Path:
        """Directory of timestamped experiment manifests."""
        return self.root / "experiments"

    def manifest(self, experiment_id: str, timestamp: str) -> Path:
        """``experiments/{experiment_id}_{timestamp}.json``."""
        check_experiment_id(experiment_id)
        check_stamp(timestamp)
        return self.experiments_dir / f"{experiment_id}_{timestamp}.json"

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
        return self.root.joinpath("runs", self.shard(run_id), run_id)

    def record(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}.json``: the run's record.

        Records sit directly in the shard directory, not in a per-run directory: creating
        a directory costs several times more than creating a file on common file systems,
        and most runs have no artifacts.
        """
        return self.root.joinpath("runs", self.shard(run_id), f"{run_id}.json")

    @staticmethod
    def run_id_of_record(file_name: str) -> str | None:
        """The run ID of a record file name, or ``None`` for anything else.

        Only names made of a valid run ID count, so a stray ``notes.json`` or a planted
        ``..json`` is never taken for a record.
        """
        if file_name.endswith(".json"):
            run_id = file_name[: -len(".json")]
            if is_run_id(run_id):
                return run_id
        return None

    def log(self, run_id: str) -> Path:
        """``runs/{id[:2]}/{id}.log``: the run's log."""
        return self.root.joinpath("runs", self.shard(run_id), f"{run_id}.log")

    def artifact(self, run_id: str, file_name: str) -> Path:
        """``runs/{id[:2]}/{id}/{file}``: an artifact file of the run."""
        return self.run_dir(run_id) / check_file_name(file_name)

    @property
    def done_dir(self) -> Path:
        """Root of success markers ``done/{id[:2]}/{id}.done``."""
        return self.root / "done"

    def done_marker(self, run_id: str) -> Path:
        """The success marker of a run."""
        return self.root.joinpath("done", self.shard(run_id), f"{run_id}.done")

    @property
    def failed_dir(self) -> Path:
        """Root of failure markers ``failed/{id[:2]}/{id}.failed``."""
        return self.root / "failed"

    def failed_marker(self, run_id: str) -> Path:
        """The failure marker of a run."""
        return self.root.joinpath("failed", self.shard(run_id), f"{run_id}.failed")

    @property
    def derived_dir(self) -> Path:
        """Root of derived metrics ``derived/{id[:2]}/{id}.json``."""
        return self.root / "derived"

    def derived(self, run_id: str) -> Path:
        """The derived-metrics file of a run."""
        return self.derived_dir / self.shard(run_id) / f"{run_id}.json"

    def shard_dirs(self, run_id: str) -> tuple[Path, ...]:
        """The directories holding a run's files: its shard of runs, done, failed, derived."""
        shard = self.shard(run_id)
        return tuple(top / shard for top in self.data_dirs[2:])

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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in place of a file must not hang the reader in open().
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MAX_CACHED_DIRS = 64


class NoFollowReader:
    """Read files below ``root`` without following a symbolic link at any level below it.

    Another user who can write the store could replace an artifact (or a whole run
    directory) with a link to a file of yours, which an export would then copy out. Each
    directory is opened relative to its parent with ``O_NOFOLLOW`` (``openat``), so a
    link anywhere below ``root`` is refused, not followed, and nothing can be swapped
    between a check and the read. ``root`` itself may be a link (you chose it).

    Directory descriptors are cached (at most 64) because bulk reads revisit the same
    shards; use the reader as a context manager, or call :meth:`close`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[tuple[str, ...], int] = {}

    def __enter__(self) -> NoFollowReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every cached directory descriptor."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _parts(self, path: Path) -> tuple[str, ...]:
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            raise UnsafeNameError(
                f"refusing to read {str(path)!r}: it is not inside the store {str(self.root)!r}",
                name=str(path),
            ) from None
        if not parts or any(p in ("", ".", "..") for p in parts):
            raise UnsafeNameError(f"refusing to read {str(path)!r}", name=str(path))
        return parts

    def _symlink_error(self, parts: tuple[str, ...]) -> UnsafeNameError:
        path = self.root.joinpath(*parts)
        try:
            target = f" (to {os.readlink(path)!r})"
        except OSError:
            target = ""
        return UnsafeNameError(
            f"refusing to follow {str(path)!r}: it is a symbolic link{target} inside the "
            f"store; metalab reads store files only directly",
            name=str(path),
        )

    def _is_symlink(self, dir_fd: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
        except OSError:
            return False

    def _dir(self, parts: tuple[str, ...]) -> int | None:
        """A descriptor of the directory ``root/parts``, or ``None`` if it is missing."""
        cached = self._dirs.get(parts)
        if cached is not None:
            return cached
        try:
            if not parts:
                fd = os.open(self.root, _DIR_FLAGS)
            else:
                parent = self._dir(parts[:-1])
                if parent is None:
                    return None
                try:
                    fd = os.open(parts[-1], _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self._is_symlink(
                        parent, parts[-1]
                    ):
                        raise self._symlink_error(parts) from None
                    raise
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(self._dirs) >= _MAX_CACHED_DIRS:
            self.close()
        self._dirs[parts] = fd
        return fd

    def read(self, path: Path) -> bytes | None:
        """Return the bytes of the regular file ``path``, or ``None`` if it is missing.

        Raises:
            UnsafeNameError: ``path`` (or a directory on the way) is a symbolic link or
                not a regular file, or ``path`` is outside ``root``.
            OSError: the file exists but cannot be read.
        """
        parts = self._parts(path)
        parent = self._dir(parts[:-1])
        if parent is None:
            return None
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink_error(parts) from None
            raise
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeNameError(
                    f"refusing to read {str(path)!r}: not a regular file", name=str(path)
                )
            return handle.read()

    def list_dir(self, path: Path) -> list[tuple[str, bool]]:
        """``(name, is_symlink)`` of the non-hidden entries of directory ``path``, sorted.

        A missing directory has no entries.

        Raises:
            UnsafeNameError: ``path`` or a directory on the way is a symbolic link.
        """
        fd = self._dir(self._parts(path))
        if fd is None:
            return []
        # scandir works on a duplicate of the descriptor and rewinds it, so the cached
        # descriptor stays usable.
        with os.scandir(fd) as entries:
            return sorted((e.name, e.is_symlink()) for e in entries if not e.name.startswith("."))
