"""Password files and log aliases of SLURM submissions (issue 11, item 5).

The attacks are performed as a second user (``nobody``): a co-user who plants the
private directory, a symlink or a password file must never get a password written where
they can read it, nor have one of theirs read as ours.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalab.errors import StoreError, UntrustedFileError
from metalab.store.credentials import (
    CREDENTIALS_DIR_ENV,
    Credential,
    make_alias,
    passfile_path,
    read_passfile,
    write_passfile,
)
from other_user import run_as_other_user, shared_dir

TRICKY = Credential("db.example:5432", "5432", "my\\db", "us:er", "p:w\\@ é#")


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A sticky world-writable directory (like /tmp on a cluster) both users reach."""
    path = shared_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_password_file_round_trip_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(tmp_path / "private"))
    umask = os.umask(0)  # whatever the umask, the file is 0600 and its directory 0700
    try:
        path = write_passfile("slurm-x", [TRICKY, Credential("", "", "", "", "plain")])
    finally:
        os.umask(umask)
    assert path == passfile_path("slurm-x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_passfile(path) == [TRICKY, Credential("", "", "", "", "plain")]
    assert read_passfile(path)[0].password == TRICKY.password
    assert TRICKY.password not in repr(read_passfile(path))
    with pytest.raises(StoreError, match="cannot create password file"):
        write_passfile("slurm-x", [TRICKY])  # never overwritten, never reused


def test_a_password_file_planted_by_another_user_is_refused(shared: Path) -> None:
    planted = shared / "slurm-x.pgpass"

    def plant() -> None:
        planted.write_text("h:1:d:u:their-password\n")
        planted.chmod(0o600)

    run_as_other_user(plant)
    with pytest.raises(UntrustedFileError, match="owned by nobody"):
        read_passfile(planted)


def test_a_password_file_others_can_read_or_a_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(tmp_path / "private"))
    path = write_passfile("slurm-y", [TRICKY])
    path.chmod(0o640)
    with pytest.raises(UntrustedFileError, match="only its owner can read"):
        read_passfile(path)
    path.chmod(0o600)
    link = tmp_path / "link.pgpass"
    link.symlink_to(path)
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        read_passfile(link)
    with pytest.raises(StoreError, match="does not exist"):
        read_passfile(tmp_path / "gone.pgpass")


def test_no_password_is_written_into_a_directory_another_user_prepared(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = shared / "creds"
    decoy = shared / "decoy"

    def prepare() -> None:
        theirs.mkdir(mode=0o700)
        decoy.mkdir(mode=0o777)
        (shared / "link").symlink_to(decoy)

    run_as_other_user(prepare)
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(theirs))
    with pytest.raises(UntrustedFileError, match="owned by nobody"):
        write_passfile("slurm-z", [TRICKY])
    # A symlink they planted where our private directory should be is not followed.
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(shared / "link"))
    with pytest.raises(UntrustedFileError, match="not a directory"):
        write_passfile("slurm-z", [TRICKY])
    with pytest.raises(UntrustedFileError):
        make_alias("slurm-z", str(shared))
    assert list(decoy.iterdir()) == []


def test_a_private_directory_open_to_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(loose))
    with pytest.raises(UntrustedFileError, match="only its owner can read or write"):
        write_passfile("slurm-w", [TRICKY])
    assert list(loose.iterdir()) == []
