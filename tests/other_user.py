"""Run a piece of an attack as a second Unix user (``nobody``), not as the test's user.

The security tests perform each attack for real: the hostile file is written by another
account, so ownership checks see a foreign owner exactly as they would on a shared
``/scratch``. This needs root (CI runs as root); without it the helpers skip, or fail
under ``METALAB_REQUIRE_SERVICES=1`` like every other missing prerequisite.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

OTHER_USER = "nobody"


def other_uid_gid() -> tuple[int, int]:
    """The uid and gid of the second user; skips (or fails when required) without root."""
    from services import services_required

    if os.geteuid() != 0:
        message = f"acting as {OTHER_USER!r} needs root"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    entry = pwd.getpwnam(OTHER_USER)
    return entry.pw_uid, entry.pw_gid


def run_as_other_user(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child with the second user's uid/gid; raise if it failed.

    The child exits 0 when ``action`` returns and 1 (after printing the exception) when it
    raises, so the parent sees every failure of the attack setup itself.
    """
    uid, gid = other_uid_gid()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            action()
            code = 0
        except BaseException as exc:
            print(f"attack step as {OTHER_USER} failed: {type(exc).__name__}: {exc}")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the step run as {OTHER_USER} failed"


def shared_dir(prefix: str = "metalab-shared-") -> Path:
    """A fresh world-writable (sticky, like /tmp) directory both users can reach.

    Returned under /tmp rather than pytest's per-user tmp_path, which ``nobody`` cannot
    traverse. The caller removes it (``shutil.rmtree``).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o1777)
    return path
