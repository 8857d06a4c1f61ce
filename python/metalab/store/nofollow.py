"""Read files below a store root without following any symbolic link planted in it.

Split from :mod:`metalab.store.layout` (which re-exports :class:`NoFollowReader`): the
layout names the paths, this reads them safely.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from metalab.errors import UnsafeNameError

__all__ = ["NoFollowReader"]

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
