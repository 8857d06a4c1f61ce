"""A real 1 MiB file system for tests of a full disk (ENOSPC from the kernel, not a patch).

Mounting a tmpfs needs root (CI runs as root). Without it the test skips, or fails under
``METALAB_REQUIRE_SERVICES=1`` like every other missing prerequisite.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_small_disk(mount_point: Path) -> Iterator[Path]:
    """Mount a 1 MiB tmpfs at ``mount_point`` (created here) and unmount it afterwards."""
    from services import services_required

    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        message = f"mounting a tmpfs needs root: {mounted.stderr.strip()}"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
