"""Crash-safe file writes: write a uniquely named temporary sibling, then rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "temp_name"]


def temp_name(target: Path) -> Path:
    """Return a hidden, writer-unique temporary sibling of ``target``.

    The name carries the PID and random bits so concurrent writers on a shared file
    system (SLURM array tasks) never share a temporary file.
    """
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(target: Path, data: bytes, *, mode: int = 0o644, durable: bool = False) -> None:
    """Replace ``target`` with ``data`` so readers see the old or the new file, never half.

    The temporary file is created with ``mode`` from the start (so a secret is never
    readable by others, not even briefly). With ``durable=True`` the data and the rename
    are fsync-ed, surviving power loss as well as process kills.

    Raises:
        OSError: the write failed (disk full, read-only); ``target`` is left untouched.
    """
    tmp = temp_name(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, mode)
    except FileNotFoundError:
        # Create missing directories only when needed: one syscall less per write.
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
