"""A ``service.json`` another user could have written never redirects a run (issue 11, item 1).

``metalab.run(exp, store=dir)`` switches to the PostgreSQL service advertised in
``{dir}/services/postgres/service.json``. In a shared store another user can write that
file and point it at a database they own; each test performs that attack for real (the
file is written by ``nobody``, or is the victim's own but writable by others) and the
victim must get :class:`UntrustedFileError` before anything runs and without a single
connection attempt, which a listening socket standing in for the attacker's server
would see. A legitimate service, started by ``start_service``, is still used, and said
so once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import metalab
from metalab.errors import ServiceError, UntrustedFileError
from metalab.service import (
    default_service_dir,
    service_status,
    start_service,
    stop_service,
    store_from_service_file,
)
from other_user import other_uid_gid, run_as_other_user, shared_dir
from services import require_slurm, services_required

METALAB = [sys.executable, "-c", "import sys; from metalab.cli import main; sys.exit(main())"]


@metalab.operation
def touch(params, capture):  # type: ignore[no-untyped-def]
    """Leaves a file behind: evidence that a run executed."""
    Path(params["marker"]).write_text("ran")
    capture.metric("ok", 1)


def experiment(marker: Path) -> metalab.Experiment:
    return metalab.Experiment(
        name="svc_trust",
        version="1",
        context={},
        operation=touch,
        params=metalab.grid(marker=[str(marker)]),
        seeds=metalab.seeds(base=1),
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket standing in for the attacker's database: it records connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def assert_never_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        conn, _ = sock.accept()
        conn.close()


def hostile_info(port: int) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "user": "metalab",
        "database": "metalab",
        "password": "attacker-chosen",
        "data_dir": "/nonexistent",
        "pid": None,
        "mode": "native",
    }


@pytest.fixture
def shared_store() -> Iterator[Path]:
    """A store directory both users can write (like a lab's group-writable /scratch)."""
    path = shared_dir("metalab-svc-store-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def plant_as_other_user(store: Path, content: dict[str, object] | Path) -> Path:
    """As ``nobody``: create services/postgres and a 0644 service.json (or a symlink)."""
    service_dir = default_service_dir(store)
    service_file = service_dir / "service.json"

    def attack() -> None:
        os.umask(0o022)
        service_dir.mkdir(parents=True)
        if isinstance(content, Path):
            service_file.symlink_to(content)
        else:
            service_file.write_text(json.dumps(content))

    run_as_other_user(attack)
    return service_file


def test_service_file_of_another_user_is_refused_before_anything_runs(
    shared_store: Path, listener: socket.socket, tmp_path: Path
) -> None:
    nobody, _ = other_uid_gid()
    service_file = plant_as_other_user(shared_store, hostile_info(listener.getsockname()[1]))
    marker = tmp_path / "ran"
    with pytest.raises(UntrustedFileError) as caught:
        metalab.run(experiment(marker), store=str(shared_store)).result()
    error = caught.value
    assert (error.path, error.owner_uid, error.mode) == (str(service_file), nobody, 0o644)
    message = str(error)
    assert str(service_file) in message and f"nobody (uid {nobody})" in message
    assert "-rw-r--r--" in message and "Remove it" in message
    assert not marker.exists(), "a run executed"
    assert sorted(os.listdir(shared_store)) == ["services"], "the store was written to"
    assert_never_connected(listener)


def test_symlinked_service_file_is_refused(
    shared_store: Path, listener: socket.socket, tmp_path: Path
) -> None:
    # The link leads to a perfectly trusted file of the victim: the link itself is not.
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    (own / "service.json").write_text(json.dumps(hostile_info(listener.getsockname()[1])))
    (own / "service.json").chmod(0o600)
    plant_as_other_user(shared_store, own / "service.json")
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        metalab.run(experiment(tmp_path / "ran"), store=str(shared_store))
    assert not (tmp_path / "ran").exists()
    assert_never_connected(listener)


@pytest.mark.parametrize(
    ("file_mode", "dir_mode", "refused"),
    [
        (0o620, 0o700, "service.json"),  # group-writable file
        (0o602, 0o700, "service.json"),  # other-writable file
        (0o600, 0o770, "postgres"),  # the directory lets others swap the file
        (0o600, 0o777, "postgres"),
    ],
)
def test_own_service_file_that_others_can_change_is_refused(
    tmp_path: Path, listener: socket.socket, file_mode: int, dir_mode: int, refused: str
) -> None:
    store = tmp_path / "store"
    service_dir = default_service_dir(store)
    service_dir.mkdir(parents=True)
    service_file = service_dir / "service.json"
    service_file.write_text(json.dumps(hostile_info(listener.getsockname()[1])))
    service_file.chmod(file_mode)
    service_dir.chmod(dir_mode)
    with pytest.raises(UntrustedFileError) as caught:
        metalab.run(experiment(tmp_path / "ran"), store=str(store))
    assert Path(caught.value.path).name == refused
    assert caught.value.mode == (file_mode if refused == "service.json" else dir_mode)
    assert stat.filemode(caught.value.mode | stat.S_IFREG)[1:] in str(caught.value)
    assert not (tmp_path / "ran").exists()
    assert_never_connected(listener)


def test_service_dir_made_by_another_user_is_refused_even_with_an_own_file(
    shared_store: Path, listener: socket.socket, tmp_path: Path
) -> None:
    # E.g. an older metalab's `postgres start` wrote its 0600 file into a planted dir:
    # the directory's owner can replace that file at any time.
    nobody, _ = other_uid_gid()
    service_dir = default_service_dir(shared_store)
    run_as_other_user(lambda: service_dir.mkdir(parents=True, mode=0o755))
    (service_dir / "service.json").write_text(json.dumps(hostile_info(listener.getsockname()[1])))
    (service_dir / "service.json").chmod(0o600)
    with pytest.raises(UntrustedFileError) as caught:
        metalab.run(experiment(tmp_path / "ran"), store=str(shared_store))
    assert caught.value.path == str(service_dir) and caught.value.owner_uid == nobody
    assert f"nobody (uid {nobody})" in str(caught.value)
    assert_never_connected(listener)


def test_a_readable_password_file_is_refused(tmp_path: Path, listener: socket.socket) -> None:
    service_dir = default_service_dir(tmp_path / "store")
    service_dir.mkdir(parents=True, mode=0o700)
    (service_dir / "service.json").write_text(json.dumps(hostile_info(listener.getsockname()[1])))
    (service_dir / "service.json").chmod(0o600)
    (service_dir / "pgpass").write_text("*:*:*:metalab:secret\n")
    (service_dir / "pgpass").chmod(0o644)
    with pytest.raises(UntrustedFileError, match="password file"):
        store_from_service_file(service_dir / "service.json")
    assert_never_connected(listener)


def test_status_and_stop_never_act_on_a_planted_service_file(
    shared_store: Path, listener: socket.socket
) -> None:
    """``status`` would send the password; ``stop`` would scancel whatever job it names."""
    require_slurm()
    job = subprocess.run(
        ["sbatch", "--parsable", "--job-name=metalab-victim", "--wrap", "sleep 300"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        hostile = {**hostile_info(listener.getsockname()[1]), "mode": "slurm", "job_id": job}
        plant_as_other_user(shared_store, hostile)
        done = {
            action: subprocess.run(
                [*METALAB, "postgres", action, "--store", str(shared_store)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,  # unprotected, stop waits 60 s for the "server" to go
            )
            for action in ("stop", "status")
        }
        queued = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False
        )
        assert queued.stdout.strip() in {"PENDING", "RUNNING"}, "the victim's job was cancelled"
        for action, outcome in done.items():
            assert outcome.returncode == 1, (action, outcome.stdout, outcome.stderr)
            assert "refusing to load service file" in outcome.stderr
            assert "nobody" in outcome.stderr
        with pytest.raises(UntrustedFileError):
            service_status(default_service_dir(shared_store))
        assert_never_connected(listener)
    finally:
        subprocess.run(["scancel", job], capture_output=True, check=False)


def _require_native_postgres() -> None:
    from metalab.service import find_bin_dir

    try:
        find_bin_dir()
    except ServiceError as exc:
        if services_required():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


def remove_scratch(service_dir: Path) -> None:
    """Remove root's scratch data directory recorded by a start (tests clean up)."""
    location = service_dir / "data-location"
    if location.exists():
        shutil.rmtree(Path(location.read_text().strip()).parent, ignore_errors=True)


@pytest.mark.postgres
def test_own_service_is_used_and_announced_once_without_the_password(tmp_path: Path) -> None:
    _require_native_postgres()
    store = tmp_path / "store"
    service_dir = default_service_dir(store)
    info = start_service(service_dir, engine="native", timeout=120)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # Python's own once-per-location filter is off
            first = metalab.run(experiment(tmp_path / "a"), store=str(store)).result()
            second = metalab.run(experiment(tmp_path / "b"), store=str(store)).result()
        said = [w for w in caught if "advertised by" in str(w.message)]
        assert len(said) == 1, [str(w.message) for w in caught]
        text = str(said[0].message)
        assert str(service_dir / "service.json") in text and f"{info.host}:{info.port}" in text
        assert info.password not in text
        assert said[0].filename == __file__  # points at the caller of metalab.run
        for results in (first, second):
            assert len(results.successful) == 1
            assert type(results.store).__name__ == "PostgresStore"
            results.store.close()
        assert not (store / "runs").exists()
    finally:
        stop_service(service_dir)
        remove_scratch(service_dir)
