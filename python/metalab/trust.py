"""Which local files metalab trusts: the one ownership rule, in one place.

A file that can redirect work (a ``service.json``), hold a secret (a password file, the
signing key) or carry pickled code (a FileStore blob) is trusted only when it is owned by
the current user and cannot be written by group or others. The check is made on the
opened file descriptor (``fstat`` after ``open(O_NOFOLLOW)``), so a file swapped or a
symlink planted between a check and the read cannot slip through.

Directories get the same rule (:func:`open_trusted_dir`): a directory whose files metalab
trusts must itself be ours and not writable by others, or its files could be swapped.
Files inside are then opened relative to the directory's descriptor (``dir_fd=``), so a
co-user renaming a parent directory cannot redirect the open either.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

from metalab.errors import UntrustedFileError

__all__ = [
    "describe_owner",
    "open_trusted",
    "open_trusted_dir",
    "read_trusted",
    "verify_trusted",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Ancestors are only passed through: O_PATH needs search, not read, permission (a 0711
# home or lab directory), and its descriptor still serves as dir_fd and for fstat.
_PASS_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC


def describe_owner(uid: int) -> str:
    """``"name (uid N)"`` for a uid, or ``"uid N"`` when it has no passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def verify_trusted(
    st: os.stat_result,
    path: str | os.PathLike[str],
    what: str,
    *,
    private: bool = False,
    owner: int | None = None,
) -> None:
    """Raise :class:`UntrustedFileError` unless ``st`` describes a file safely ours.

    Args:
        st: the ``fstat``/``lstat`` result of the file (or directory).
        path: its path, for the message.
        what: what the file is for, e.g. ``"service file"``; names it in the message.
        private: also refuse group/other *read* access (secrets: keys, passwords).
        owner: the uid that must own it (default: the current user), e.g. the
            unprivileged server user for a PostgreSQL data directory made by root.
    """
    forbidden = 0o077 if private else 0o022
    expected_uid = os.getuid() if owner is None else owner
    if st.st_uid == expected_uid and not st.st_mode & forbidden:
        return
    expected = (
        "that only its owner can read or write" if private else "that only its owner can write"
    )
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    raise UntrustedFileError(
        f"refusing to load {what} {str(path)!r}: owned by {describe_owner(st.st_uid)} with mode "
        f"{stat.filemode(st.st_mode)}; expected a {kind} of {describe_owner(expected_uid)} "
        f"{expected}, since another user could have written it. Remove it, or "
        f"recreate it from this account.",
        path=str(path),
        owner_uid=st.st_uid,
        mode=stat.S_IMODE(st.st_mode),
    )


def open_trusted(
    path: str | os.PathLike[str], what: str, *, private: bool = False, dir_fd: int | None = None
) -> int | None:
    """Open ``path`` read-only without following a symlink and check who owns it.

    Returns the open file descriptor (the caller closes it), or ``None`` if the file does
    not exist.

    Args:
        path: the file; with ``dir_fd`` only its last component is looked up.
        what: what the file is for, named in the messages.
        private: also refuse group/other read access.
        dir_fd: an open, already verified directory (:func:`open_trusted_dir`) holding
            the file; the lookup is relative to it, so a parent directory swapped by
            someone else cannot redirect it. Messages still show the whole ``path``.

    Raises:
        UntrustedFileError: the file is a symlink, not a regular file, foreign-owned or
            writable (``private``: readable) by group/others.
    """
    name = os.path.basename(path) if dir_fd is not None else path
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            st = os.lstat(name, dir_fd=dir_fd)
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


def read_trusted(
    path: str | os.PathLike[str], what: str, *, private: bool = False, dir_fd: int | None = None
) -> bytes | None:
    """Read a whole trusted file (see :func:`open_trusted`); ``None`` if it does not exist."""
    fd = open_trusted(Path(path), what, private=private, dir_fd=dir_fd)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _refused(
    path: str | os.PathLike[str], what: str, st: os.stat_result, problem: str
) -> UntrustedFileError:
    return UntrustedFileError(
        f"refusing to use {what} {str(path)!r}: {problem} (owned by "
        f"{describe_owner(st.st_uid)}, mode {stat.filemode(st.st_mode)}); remove it, or "
        f"choose a path that only this account ({describe_owner(os.getuid())}) can change",
        path=str(path),
        owner_uid=st.st_uid,
        mode=stat.S_IMODE(st.st_mode),
    )


def _open_dir_entry(dir_fd: int, name: str, shown: Path, what: str, leaf: bool) -> int | None:
    """Open the directory ``name`` under ``dir_fd``; ``None`` when it does not exist.

    A symlink as the last component is always refused. An ancestor symlink is followed
    only when it was made by this user, root or the owner of the directory holding it:
    anyone else (a co-user of a shared directory) could point it anywhere.
    """
    flags = _DIR_FLAGS if leaf else _PASS_FLAGS | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR on Linux, ELOOP elsewhere.
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    st = os.lstat(name, dir_fd=dir_fd)
    if not stat.S_ISLNK(st.st_mode):
        raise _refused(shown, what, st, "not a directory") from None
    if leaf:
        raise _refused(shown, what, st, "a symbolic link; trusted directories are used directly")
    if st.st_uid not in (os.getuid(), 0, os.fstat(dir_fd).st_uid):
        raise _refused(
            shown, what, st, "a symbolic link another user made, so it may lead anywhere"
        )
    return os.open(name, _PASS_FLAGS, dir_fd=dir_fd)


def _make_private_dir(dir_fd: int, name: str, shown: Path, what: str) -> int | None:
    """Create ``name`` under ``dir_fd`` as a 0700 directory of ours and open it.

    ``mkdir`` is exclusive: ``None`` when something appeared there meanwhile (the caller
    then judges it like any existing entry). The mode is set explicitly after creation
    because ``mkdir``'s is filtered by the umask (0o000 must not give 0777).
    """
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        return None
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():  # swapped between mkdir and open
            raise _refused(shown, what, st, "replaced right after metalab created it")
        os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_trusted_dir(
    path: str | os.PathLike[str],
    what: str,
    *,
    create: bool = False,
    dir_fd: int | None = None,
    owner: int | None = None,
    private: bool = False,
) -> int | None:
    """Open a directory whose files metalab will trust, never following a planted symlink.

    Without ``dir_fd`` the path is walked component by component from ``/``: existing
    ancestors may belong to anyone (a shared store root is the point), but an ancestor
    symlink is followed only when this user, root or the owner of the directory holding
    it made it. With ``dir_fd`` only the last component is looked up, relative to it.

    Args:
        path: the directory (absolute, or relative to the current directory).
        what: what it is for, named in the messages (e.g. ``"service directory"``).
        create: create missing components as private 0700 directories of the current
            user, whatever the umask; otherwise return ``None`` when one is missing.
        dir_fd: an open directory holding ``path``'s last component.
        owner: the uid an existing directory must belong to (default: the current user).
            A directory created here always belongs to the current user; the caller
            hands it over with ``os.fchown`` on the returned descriptor.
        private: also refuse group/other read access of an existing directory.

    Returns:
        An ``O_DIRECTORY`` descriptor (the caller closes it), or ``None``.

    Raises:
        UntrustedFileError: the directory (or an ancestor) is a symlink another user
            could have planted or not a directory, or the directory exists but is
            foreign-owned or writable by group/others.
    """
    shown = Path(os.path.abspath(path))
    if dir_fd is not None:
        parent, walked, names = os.dup(dir_fd), shown.parent, [shown.name]
    else:
        parent, walked, names = os.open("/", _DIR_FLAGS), Path("/"), list(shown.parts[1:])
    try:
        for index, name in enumerate(names):
            walked = walked / name
            leaf = index == len(names) - 1
            fd = _open_dir_entry(parent, name, walked, what, leaf)
            made = fd is None and create
            if made:
                fd = _make_private_dir(parent, name, walked, what)
                if fd is None:  # lost a race: judge what is there now
                    made, fd = False, _open_dir_entry(parent, name, walked, what, leaf)
            if fd is None:
                return None
            os.close(parent)
            parent = fd
            if leaf and not made:
                verify_trusted(os.fstat(fd), walked, what, private=private, owner=owner)
        if not names:  # the root directory itself
            verify_trusted(os.fstat(parent), walked, what, private=private, owner=owner)
        result, parent = parent, -1
        return result
    finally:
        if parent >= 0:
            os.close(parent)
