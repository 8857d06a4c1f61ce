"""Directories ``metalab postgres start`` makes are private and never reached via a planted link.

Run as root, the service manager hands a data directory to the ``postgres`` user. It used
to use the predictable ``/var/tmp/metalab-postgres/<digest>/data`` and ``chown`` it by
path, so a symlink planted there by another user made root give away any directory, and
missing parents were created with the process umask (0777 under umask 000). Each attack
below is performed by ``nobody`` in a sticky world-writable directory standing in for
``/var/tmp`` (``SCRATCH_ROOT``) or in a shared store; the target of every planted link is
a root-owned directory whose owner, mode and content must stay exactly as they were.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalab import service_native
from metalab.errors import ServiceError, UntrustedFileError
from metalab.service import default_service_dir, service_status, start_service, stop_service
from metalab.service_files import ServiceDir
from other_user import other_uid_gid, run_as_other_user, shared_dir
from services import services_required


def require_native_postgres() -> tuple[int, int]:
    """The ``postgres`` user's uid/gid; skips without root, binaries or that user."""
    other_uid_gid()  # root is needed to act as another user
    import pwd

    try:
        service_native.find_bin_dir()
        entry = pwd.getpwnam(service_native.UNPRIVILEGED_USER)
    except (ServiceError, KeyError) as exc:
        if services_required():
            pytest.fail(f"native PostgreSQL unavailable: {exc}", pytrace=False)
        pytest.skip(f"native PostgreSQL unavailable: {exc}")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh root-owned sticky 1777 directory, like /var/tmp, as the scratch root."""
    path = shared_dir("metalab-vartmp-")
    monkeypatch.setattr(service_native, "SCRATCH_ROOT", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A root-owned directory (0755, one file) that a planted link points at."""
    path = Path(tempfile.mkdtemp(dir=tmp_path))
    path.chmod(0o755)
    (path / "precious").write_text("root's")
    return path


def snapshot(path: Path) -> tuple[int, int, int, list[str]]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), sorted(os.listdir(path))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_start_never_follows_a_link_planted_at_the_old_predictable_path(
    scratch: Path, target: Path, tmp_path: Path
) -> None:
    server_uid, _ = require_native_postgres()
    store = tmp_path / "store"
    service_dir = default_service_dir(store)
    digest = hashlib.sha256(str(service_dir).encode()).hexdigest()[:12]
    planted = scratch / "metalab-postgres" / digest

    def attack() -> None:
        planted.mkdir(parents=True, mode=0o777)
        (planted / "data").symlink_to(target)

    run_as_other_user(attack)
    before = snapshot(target)
    old_umask = os.umask(0o000)  # parents must be 0700 even so
    try:
        info = start_service(service_dir, engine="native", timeout=120)
    except ServiceError:
        # Unprotected, root chowns the target and initdb then fails inside it: say that.
        assert snapshot(target) == before, "the planted link's target was changed"
        raise
    finally:
        os.umask(old_umask)
    try:
        assert snapshot(target) == before, "the planted link's target was changed"
        assert os.lstat(planted / "data").st_uid != 0 and (planted / "data").is_symlink()
        data = Path(info.data_dir)
        assert data.parent.parent == scratch and data.parent.name.startswith("metalab-postgres-")
        # The top is root's and 0711 (the server may pass, nobody may list or write).
        assert (os.lstat(data.parent).st_uid, mode(data.parent)) == (0, 0o711)
        assert (os.lstat(data).st_uid, mode(data)) == (server_uid, 0o700)
        for created in (store, store / "services", service_dir):
            assert mode(created) == 0o700, created
        for secret in ("service.json", "pgpass", "data-location"):
            assert mode(service_dir / secret) == 0o600, secret
        assert (service_dir / "data-location").read_text().strip() == str(data)
        # The recorded location is what status, stop and the next start use.
        assert service_status(service_dir)[0]
        stop_service(service_dir)
        again = start_service(service_dir, engine="native", timeout=120)
        assert again.data_dir == info.data_dir and again.password == info.password
    finally:
        stop_service(service_dir)
        shutil.rmtree(Path(info.data_dir).parent, ignore_errors=True)


@pytest.mark.parametrize("planted", ["symlink", "directory"])
def test_a_recorded_scratch_dir_replaced_by_another_user_is_refused(
    scratch: Path, target: Path, tmp_path: Path, planted: str
) -> None:
    require_native_postgres()
    service_dir = default_service_dir(tmp_path / "store")
    with ServiceDir.create(service_dir) as service:
        data, fd = service_native.prepare_data_dir(service)  # what a first start makes
        os.close(fd)
    base = data.parent
    shutil.rmtree(base)  # e.g. a tmp cleaner; the name stays listed in data-location

    def attack() -> None:
        if planted == "symlink":
            base.symlink_to(target)
        else:
            (base / "data").mkdir(parents=True)
            base.chmod(0o777)
            (base / "data").chmod(0o777)

    run_as_other_user(attack)
    before = snapshot(target)
    nobody_before = snapshot(base) if planted == "directory" else None
    with pytest.raises(UntrustedFileError) as caught:
        start_service(service_dir, engine="native", timeout=60)
    assert caught.value.path == str(base) and caught.value.owner_uid == other_uid_gid()[0]
    assert "nobody" in str(caught.value)
    assert snapshot(target) == before
    if nobody_before is not None:
        assert snapshot(base) == nobody_before
        assert snapshot(base / "data")[:3] == (*other_uid_gid(), 0o777)


def test_start_refuses_a_link_planted_in_the_service_path(target: Path) -> None:
    require_native_postgres()
    store = shared_dir("metalab-store-")
    try:
        run_as_other_user(lambda: (store / "services").symlink_to(target))
        before = snapshot(target)
        with pytest.raises(UntrustedFileError, match="symbolic link another user made") as caught:
            start_service(default_service_dir(store), engine="native", timeout=60)
        assert caught.value.path == str(store / "services")
        assert snapshot(target) == before, "root created or wrote files through the link"
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_start_refuses_a_service_dir_another_user_made() -> None:
    require_native_postgres()
    nobody, _ = other_uid_gid()
    store = shared_dir("metalab-store-")
    service_dir = default_service_dir(store)
    try:

        def attack() -> None:
            os.umask(0o000)
            service_dir.mkdir(parents=True, mode=0o777)

        run_as_other_user(attack)
        with pytest.raises(UntrustedFileError, match=f"nobody \\(uid {nobody}\\)") as caught:
            start_service(service_dir, engine="native", timeout=60)
        assert caught.value.path == str(service_dir)
        assert os.listdir(service_dir) == [], "a password file was written where nobody owns it"
    finally:
        shutil.rmtree(store, ignore_errors=True)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
def test_private_dirs_are_0700_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    tmp_path.chmod(0o755)
    wanted = tmp_path / "a" / "b" / "services" / "postgres"
    old_umask = os.umask(umask)
    try:
        ServiceDir.create(wanted).close()
    finally:
        os.umask(old_umask)
    for path in (tmp_path / "a", tmp_path / "a" / "b", wanted.parent, wanted):
        assert mode(path) == 0o700, path
    assert mode(tmp_path) == 0o755  # what existed before is left alone


def test_own_links_in_the_path_are_followed(tmp_path: Path) -> None:
    # A user's (or root's) own link, e.g. /scratch -> /lustre/scratch, is not an attack.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with ServiceDir.create(tmp_path / "link" / "svc") as service:
        service.write("probe", b"x")
    assert (real / "svc" / "probe").read_bytes() == b"x"
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        ServiceDir.create(tmp_path / "link")  # the directory itself must be real


def test_an_ancestor_that_others_may_only_traverse_is_fine() -> None:
    # As an ordinary user (nobody) below a 0711 directory of root, like a cluster's
    # home or lab directories: passing through must not need read permission.
    nobody, gid = other_uid_gid()
    top = shared_dir("metalab-traverse-")
    try:
        (top / "lab").mkdir(mode=0o711)
        (top / "lab").chmod(0o711)
        (top / "lab" / "me").mkdir()
        os.chown(top / "lab" / "me", nobody, gid)
        wanted = top / "lab" / "me" / "store" / "services" / "postgres"

        def as_user() -> None:
            with ServiceDir.create(wanted) as service:
                service.write("probe", b"ok")
            with ServiceDir.open(wanted) as service:  # type: ignore[union-attr]
                assert service.read("probe") == b"ok"

        run_as_other_user(as_user)
        assert os.lstat(wanted).st_uid == nobody and mode(wanted) == 0o700
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_scratch_dir_of_earlier_versions_is_adopted_only_when_root_made_it(
    scratch: Path, tmp_path: Path
) -> None:
    server_uid, server_gid = require_native_postgres()
    service_dir = default_service_dir(tmp_path / "store")
    digest = hashlib.sha256(str(service_dir).encode()).hexdigest()[:12]
    legacy = scratch / "metalab-postgres" / digest / "data"
    legacy.mkdir(parents=True, mode=0o700)  # as earlier versions did: root's, 0755 parents
    for parent in (legacy.parent, legacy.parent.parent):
        parent.chmod(0o755)
    os.chown(legacy, server_uid, server_gid)
    with ServiceDir.create(service_dir) as service:
        data, fd = service_native.prepare_data_dir(service)
        os.close(fd)
    assert data == legacy  # the existing cluster (and its data) is kept
    assert (service_dir / "data-location").read_text().strip() == str(legacy)
    # Had anyone else been able to write on the way, it would not have been adopted.
    legacy.parent.chmod(0o777)
    (service_dir / "data-location").unlink()
    with ServiceDir.open(service_dir) as service:  # type: ignore[union-attr]
        data, fd = service_native.prepare_data_dir(service)
        os.close(fd)
    assert data != legacy and data.parent.name.startswith("metalab-postgres-")
    assert mode(legacy.parent) == 0o777 and os.lstat(legacy).st_uid == server_uid  # untouched
