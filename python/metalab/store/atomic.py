"""Crash-safe file writes (temporary sibling + rename) and the cleanup of their leftovers.

A writer killed between creating its temporary and renaming it leaves the temporary
behind (a killed artifact write can leave hundreds of megabytes). The temporary's name
therefore says who wrote it — host, PID and the PID's start time — so a later sweep can
tell a dead writer's leftover from a live writer's file in progress without asking
anyone: one read of ``/proc/{pid}/stat`` per writer, no subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "STALE_FOREIGN_AGE",
    "SweepReport",
    "TempInfo",
    "atomic_write",
    "parse_temp_name",
    "sweep_temporaries",
    "temp_name",
    "writer_alive",
    "writer_token",
]

#: A temporary whose writer cannot be checked from here (another host, another PID
#: namespace, an older metalab) is removed only when it has not changed for this long:
#: no single file write takes a day.
STALE_FOREIGN_AGE = 24 * 3600.0

# .{target}.{host}.{pid}.{scope}-{start}.{random}.tmp ; host has no '.', so the target
# (which may contain dots) is everything before the last five fields.
_TEMP = re.compile(
    r"\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_\-]{1,40})\.(?P<pid>[0-9]{1,10})"
    r"\.(?P<scope>[0-9a-f]{8})-(?P<start>[0-9]{1,20})\.[0-9a-f]{8}\.tmp"
)
# Temporaries of metalab before writer identities: .{target}.{pid}.{random}.tmp
_LEGACY_TEMP = re.compile(r"\.(?P<target>.+)\.(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}\.tmp")


@dataclass(frozen=True)
class _Writer:
    host: str
    pid: int
    scope: str
    start: int


def _host_token() -> str:
    # Hostnames may hold dots (which separate the fields) or, rarely, anything at all.
    # os.uname().nodename is what socket.gethostname() returns on POSIX, without socket.
    return re.sub(r"[^A-Za-z0-9\-]", "_", os.uname().nodename)[:40] or "unknown"


def _scope_token() -> str:
    """8 hex characters naming this kernel boot and PID namespace.

    A PID is only meaningful within one boot and one PID namespace (containers on one
    host can share a hostname and a file system but not PIDs).
    """
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(path).read_text() if "boot" in path else os.readlink(path))
        except OSError:
            parts.append("")
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=4).hexdigest()


def _start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot; ``None`` if it is gone.

    Returns 0 where ``/proc`` does not exist (then only the PID's existence is checked).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        if not os.path.isdir("/proc/self"):
            return 0
        return None
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and ')': the fields after the last
    # ')' are well-formed: state is field 3, starttime field 22 (the 20th after the name).
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # a zombie writes nothing more: its parent has not reaped it
        return None
    return int(fields[19])


_current: tuple[int, _Writer] | None = None


def _me() -> _Writer:
    global _current
    pid = os.getpid()
    if _current is None or _current[0] != pid:  # recomputed in a forked child
        _current = (pid, _Writer(_host_token(), pid, _scope_token(), _start_ticks(pid) or 0))
    return _current[1]


def writer_token() -> str:
    """``{host}.{pid}.{scope}-{start}``: this process as a writer, unique across a cluster.

    Temporary names carry it, and so do the names of the results index's segments (one
    per writer process, see :mod:`metalab.store.index_segments`).
    """
    me = _me()
    return f"{me.host}.{me.pid}.{me.scope}-{me.start}"


# A per-process sequence, not random bits, tells this writer's temporaries apart: the
# writer token already names the process (unique across the cluster), and next() on a
# count is atomic under the GIL, so threads never draw the same number.
_sequence = itertools.count(int.from_bytes(os.urandom(4), "big"))
_token: tuple[int, str] | None = None


def _temp_text(target: str) -> str:
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:  # a forked child is another writer
        _token = (pid, writer_token())
    head, sep, name = target.rpartition(os.sep)
    # The writer fields add up to ~85 characters; keep the whole name within the usual
    # 255-byte limit even for long targets (the sequence number keeps it unique).
    return f"{head}{sep}.{name[:160]}.{_token[1]}.{next(_sequence) & 0xFFFFFFFF:08x}.tmp"


def temp_name(target: Path) -> Path:
    """Return a hidden, writer-unique temporary sibling of ``target``.

    The name carries the writer's host, PID and PID start time (so :func:`writer_alive`
    can tell whether the writer still runs) and a number drawn once per temporary, so
    concurrent writers on a shared file system (SLURM array tasks) never share one.
    """
    return Path(_temp_text(os.fspath(target)))


def atomic_write(
    target: str | Path, data: bytes, *, mode: int = 0o644, durable: bool = False
) -> os.stat_result:
    """Replace ``target`` with ``data`` so readers see the old or the new file, never half.

    The temporary file is created with ``mode`` from the start (so a secret is never
    readable by others, not even briefly). With ``durable=True`` the data and the rename
    are fsync-ed, surviving power loss as well as process kills.

    Returns:
        the ``fstat`` of the written file, taken after its last write (the rename keeps
        inode, size and modification time): the identity the results index records.

    Raises:
        OSError: the write failed (disk full, read-only); ``target`` is left untouched.
    """
    target = os.fspath(target)
    tmp = _temp_text(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileNotFoundError:
        # Create missing directories only when needed: one syscall less per write.
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        fd = os.open(tmp, flags, mode)
    try:
        try:
            # Straight to the descriptor: a buffered file object around it cost more
            # than the write itself for a record of a few hundred bytes.
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            written = os.fstat(fd)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        dir_fd = os.open(os.path.dirname(target) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return written


@dataclass(frozen=True)
class TempInfo:
    """Who wrote a temporary file, as its name says (``host``/``pid`` may be unknown)."""

    target: str
    host: str | None
    pid: int
    scope: str | None
    start: int | None


def parse_temp_name(name: str) -> TempInfo | None:
    """The writer encoded in a temporary's file name, or ``None`` if it is not one."""
    found = _TEMP.fullmatch(name)
    if found is not None:
        return TempInfo(
            found["target"],
            found["host"],
            int(found["pid"]),
            found["scope"],
            int(found["start"]),
        )
    legacy = _LEGACY_TEMP.fullmatch(name)
    if legacy is not None:
        return TempInfo(legacy["target"], None, int(legacy["pid"]), None, None)
    return None


def writer_alive(info: TempInfo) -> bool | None:
    """Whether the writer of a temporary still runs; ``None`` when this host cannot tell.

    ``None`` for a writer on another host, in another boot or PID namespace, or from a
    metalab that did not record one. A PID that now belongs to a process started at
    another time (PID reuse) counts as dead.
    """
    me = _me()
    if info.host != me.host or info.scope != me.scope or info.start is None:
        return None
    ticks = _start_ticks(info.pid)
    if ticks is None:
        return False
    if ticks == 0 or info.start == 0:  # no /proc: existence is all we can check
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return ticks == info.start


@dataclass
class SweepReport:
    """What a sweep of temporaries found: stale files (removed unless a dry run), kept ones."""

    removed: list[tuple[str, int]] = field(default_factory=list)
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        """Total size of the stale temporaries."""
        return sum(size for _, size in self.removed)


_AliveCache = dict[tuple[str | None, str | None, int, int | None], bool | None]


def _is_stale(info: TempInfo, mtime: float, now: float, max_age: float, cache: _AliveCache) -> bool:
    # One liveness check per writer, however many temporaries it left.
    key = (info.host, info.scope, info.pid, info.start)
    if key not in cache:
        cache[key] = writer_alive(info)
    alive = cache[key]
    if alive is None:
        return now - mtime > max_age
    return not alive


def sweep_temporaries(
    root: Path,
    tops: Iterable[Path],
    *,
    descend: Callable[[str], bool] | None = None,
    dry_run: bool = False,
    max_age: float = STALE_FOREIGN_AGE,
) -> SweepReport:
    """Remove temporaries of dead writers below each directory of ``tops``.

    One walk: each directory is listed once, symbolic links below ``root`` are never
    followed (every directory is opened relative to its parent with ``O_NOFOLLOW``), and
    files are removed relative to their directory's descriptor, so a directory swapped
    for a link during the walk cannot redirect a removal. Only names
    :func:`parse_temp_name` recognises are considered; a live writer's temporary is kept,
    as is one whose writer cannot be checked from this host until it is ``max_age``
    seconds old.

    Args:
        root: the store's directory (it may itself be a link: you chose it).
        tops: directories below ``root`` to walk (missing ones are skipped).
        descend: ``descend(name)`` says whether to enter a subdirectory called ``name``
            (default: every one).
        dry_run: report what would be removed, remove nothing.
        max_age: age in seconds after which an uncheckable writer's temporary is stale.
    """
    sweep = _Sweep(SweepReport(), {}, time.time(), max_age, dry_run, descend)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return sweep.report
    try:
        for top in tops:
            fd = _open_below(root_fd, top.relative_to(root).parts)
            if fd is not None:
                sweep.walk(fd, str(top))
    finally:
        os.close(root_fd)
    return sweep.report


def _open_below(root_fd: int, parts: tuple[str, ...]) -> int | None:
    """Open directory ``root/parts`` without following a link; ``None`` if it is not one."""
    fd = os.dup(root_fd)
    for part in parts:
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError:  # missing, not a directory, or a link planted in its place
            os.close(fd)
            return None
        os.close(fd)
        fd = child
    return fd


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Sweep:
    report: SweepReport
    cache: _AliveCache
    now: float
    max_age: float
    dry_run: bool
    descend: Callable[[str], bool] | None

    def walk(self, dir_fd: int, dir_path: str) -> None:
        """Sweep the directory open as ``dir_fd`` (closed here) and its subdirectories."""
        subdirs = []
        try:
            # os.scandir on a descriptor: no path strings built per entry, and the
            # entry types come with the listing (no stat per entry).
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    name = entry.name
                    if name[0] == "." and name.endswith(".tmp"):
                        self.consider(dir_fd, dir_path, name)
                    elif entry.is_dir(follow_symlinks=False) and (
                        self.descend is None or self.descend(name)
                    ):
                        subdirs.append(name)
            for name in subdirs:
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:  # gone, swapped for a link, or not ours to read
                    continue
                self.walk(child, os.path.join(dir_path, name))
        except OSError as exc:
            self.report.errors.append(f"cannot list {dir_path}: {exc.strerror}")
        finally:
            os.close(dir_fd)

    def consider(self, dir_fd: int, dir_path: str, name: str) -> None:
        info = parse_temp_name(name)
        if info is None:
            return
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:  # renamed or removed since the listing
            return
        if not stat.S_ISREG(st.st_mode) or not _is_stale(
            info, st.st_mtime, self.now, self.max_age, self.cache
        ):
            self.report.kept += 1
            return
        path = os.path.join(dir_path, name)
        if not self.dry_run:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                self.report.errors.append(f"cannot remove {path}: {exc.strerror}")
                return
        self.report.removed.append((path, st.st_size))
