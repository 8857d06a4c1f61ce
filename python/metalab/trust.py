"""Which local files metalab trusts: the one ownership rule, in one place.

A file that can redirect work (a ``service.json``), hold a secret (a password file, the
signing key) or carry pickled code (a FileStore blob) is trusted only when it is owned by
the current user and cannot be written by group or others. The check is made on the
opened file descriptor (``fstat`` after ``open(O_NOFOLLOW)``), so a file swapped or a
symlink planted between a check and the read cannot slip through.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

from metalab.errors import UntrustedFileError

__all__ = ["describe_owner", "open_trusted", "read_trusted", "verify_trusted"]


def describe_owner(uid: int) -> str:
    """``"name (uid N)"`` for a uid, or ``"uid N"`` when it has no passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def verify_trusted(
    st: os.stat_result, path: str | os.PathLike[str], what: str, *, private: bool = False
) -> None:
    """Raise :class:`UntrustedFileError` unless ``st`` describes a file safely ours.

    Args:
        st: the ``fstat``/``lstat`` result of the file (or directory).
        path: its path, for the message.
        what: what the file is for, e.g. ``"service file"``; names it in the message.
        private: also refuse group/other *read* access (secrets: keys, passwords).
    """
    forbidden = 0o077 if private else 0o022
    if st.st_uid == os.getuid() and not st.st_mode & forbidden:
        return
    expected = (
        "that only its owner can read or write" if private else "that only its owner can write"
    )
    raise UntrustedFileError(
        f"refusing to load {what} {str(path)!r}: owned by {describe_owner(st.st_uid)} with mode "
        f"{stat.filemode(st.st_mode)}; expected a file of {describe_owner(os.getuid())} "
        f"{expected}, since another user could have written it. Remove it, or "
        f"recreate it from this account.",
        path=str(path),
        owner_uid=st.st_uid,
        mode=stat.S_IMODE(st.st_mode),
    )


def open_trusted(path: str | os.PathLike[str], what: str, *, private: bool = False) -> int | None:
    """Open ``path`` read-only without following a symlink and check who owns it.

    Returns the open file descriptor (the caller closes it), or ``None`` if the file does
    not exist.

    Raises:
        UntrustedFileError: the file is a symlink, not a regular file, foreign-owned or
            writable (``private``: readable) by group/others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            st = os.lstat(path)
            raise UntrustedFileError(
                f"refusing to load {what} {str(path)!r}: it is a symbolic link (owned by "
                f"{describe_owner(st.st_uid)}); metalab reads trusted files only directly",
                path=str(path),
                owner_uid=st.st_uid,
                mode=stat.S_IMODE(st.st_mode),
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFileError(
                f"refusing to load {what} {str(path)!r}: not a regular file",
                path=str(path),
                owner_uid=st.st_uid,
                mode=stat.S_IMODE(st.st_mode),
            )
        verify_trusted(st, path, what, private=private)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_trusted(path: str | os.PathLike[str], what: str, *, private: bool = False) -> bytes | None:
    """Read a whole trusted file (see :func:`open_trusted`); ``None`` if it does not exist."""
    fd = open_trusted(Path(path), what, private=private)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()
