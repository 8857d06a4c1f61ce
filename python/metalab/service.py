"""A managed PostgreSQL server for metalab: local (Docker/Podman or native) or a SLURM job.

This module is the public face: start, status, stop, and the store a service file
advertises. The files of a *service directory* (default ``~/.metalab/postgres``, or
``{store}/services/postgres`` with ``--store``) and what they hold are described in
:mod:`metalab.service_files`; running PostgreSQL's own binaries, as the unprivileged
``postgres`` user when invoked as root, and where its data then lives, in
:mod:`metalab.service_native`.

A service file is obeyed only when it, its ``pgpass`` and its directory belong to you
and cannot be written by group or others: in a shared store anyone else could otherwise
redirect your runs to a database they own. Such a file is refused with
:class:`~metalab.errors.UntrustedFileError` naming it, its owner and its mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from metalab.errors import ServiceError
from metalab.service_files import (
    CONTAINER_ENV,
    DATA_DIR,
    DB_NAME,
    DB_USER,
    SBATCH_SCRIPT,
    SERVICE_FILE,
    ServiceDir,
    ServiceInfo,
    default_service_dir,
    job_log_name,
    service_artifact_root,
)
from metalab.service_native import (
    UNPRIVILEGED_USER,
    find_bin_dir,
    free_port,
    pid_alive,
    run_checked,
    serve_foreground,
    start_native,
    stop_native,
    wait_ready,
)
from metalab.trust import open_trusted, open_trusted_dir

if TYPE_CHECKING:
    from metalab.store.base import Store

__all__ = [
    "DB_NAME",
    "DB_USER",
    "UNPRIVILEGED_USER",
    "ServiceInfo",
    "container_engine",
    "default_service_dir",
    "discover_service",
    "find_bin_dir",
    "pid_alive",
    "read_service",
    "sbatch_script",
    "serve",
    "service_locator",
    "service_status",
    "start_service",
    "stop_service",
    "store_from_service_file",
]

_IMAGE = "docker.io/library/postgres:16"

# Service files already announced by this process (one line each, however many runs).
_announced: set[str] = set()
_announced_lock = threading.Lock()


def read_service(service_dir: Path) -> ServiceInfo | None:
    """Return the service described in ``service_dir``, or ``None``.

    Raises:
        UntrustedFileError: the directory or its ``service.json`` could have been
            written by another user.
        ServiceError: the file is not a metalab service file.
    """
    service = _open_existing(service_dir)
    if service is None:
        return None
    with service:
        return service.read_info()


def _open_existing(service_dir: Path) -> ServiceDir | None:
    """The service directory, verified; ``None`` if it does not exist.

    When a ``service.json`` is there it is judged first, by itself, so that a refusal
    names the file that would have redirected the work. The checks that count come
    after, made through the verified directory's descriptor.
    """
    with contextlib.suppress(NotADirectoryError):  # ServiceDir.open names the culprit
        fd = open_trusted(Path(service_dir) / SERVICE_FILE, "service file")
        if fd is not None:
            os.close(fd)
    return ServiceDir.open(service_dir)


def container_engine() -> str | None:
    """``docker`` or ``podman`` when its engine answers (a client alone is not enough)."""
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        try:
            done = subprocess.run([engine, "info"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return engine
    return None


# -- start ----------------------------------------------------------------------------
def start_service(
    service_dir: Path,
    *,
    slurm: bool = False,
    port: int | None = None,
    engine: str | None = "auto",
    sbatch_args: list[str] | None = None,
    timeout: float = 120.0,
) -> ServiceInfo:
    """Start PostgreSQL and write ``service.json``; return what it holds.

    Args:
        service_dir: where service.json, pgpass and (usually) the data live; missing
            directories are created 0700.
        slurm: submit the server as a SLURM job instead of starting it here.
        port: TCP port (default: a free one, never 5432).
        engine: "auto" (Docker/Podman when an engine answers), "native", "docker", "podman".
        sbatch_args: extra sbatch options (partition, time...).
        timeout: seconds to wait for the server to accept connections.

    Raises:
        ServiceError: a server is already running there, or it could not be started.
        UntrustedFileError: the service directory (or its data directory) exists but is
            not safely yours, or a path component is a symlink another user planted.
    """
    with ServiceDir.create(service_dir) as service:
        current = service.read_info()
        if current is not None and _accepting(current):
            raise ServiceError(
                f"already running: {current.describe()} ({service.path})", path=str(service.path)
            )
        service.unlink(SERVICE_FILE)
        if slurm:
            return _start_slurm(service, sbatch_args or [], timeout)
        chosen = container_engine() if engine == "auto" else engine
        if chosen not in (None, "native"):
            return _start_container(service, chosen, port or free_port(), timeout)
        return start_native(service, port or free_port(), timeout)


def _start_container(service: ServiceDir, engine: str, port: int, timeout: float) -> ServiceInfo:
    password = service.password()
    data_dir = service.file(DATA_DIR)
    data_fd = open_trusted_dir(
        data_dir, "PostgreSQL data directory", create=True, dir_fd=service.fd
    )
    if data_fd is not None:
        os.close(data_fd)
    name = "metalab-postgres-" + hashlib.sha256(str(service.path).encode()).hexdigest()[:12]
    # The password goes through a 0600 env file, not the command line (visible in ps).
    service.write(
        CONTAINER_ENV,
        f"POSTGRES_USER={DB_USER}\nPOSTGRES_PASSWORD={password}\nPOSTGRES_DB={DB_NAME}\n".encode(),
    )
    subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False)
    run_checked(
        [
            engine,
            "run",
            "-d",
            "--name",
            name,
            "--env-file",
            str(service.file(CONTAINER_ENV)),
            "-p",
            f"127.0.0.1:{port}:5432",
            "-v",
            f"{data_dir}:/var/lib/postgresql/data",
            _IMAGE,
        ],
        f"{engine} run",
    )
    wait_ready("127.0.0.1", port, password, timeout)
    info = ServiceInfo(
        host="127.0.0.1",
        port=port,
        user=DB_USER,
        database=DB_NAME,
        password=password,
        data_dir=str(data_dir),
        pid=None,
        mode=engine,
        container=name,
    )
    service.write_info(info)
    return info


def sbatch_script(service_dir: Path, python: str = sys.executable) -> str:
    """The batch script of the SLURM server job (it runs :func:`serve` in the foreground)."""
    out = shlex.quote(str(service_dir / job_log_name("%j")))
    return (
        "#!/bin/bash\n"
        "#SBATCH --job-name=metalab-postgres\n"
        f"#SBATCH --output={out}\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=1G\n"
        f"exec {shlex.quote(python)} -m metalab.service serve {shlex.quote(str(service_dir))}\n"
    )


def _start_slurm(service: ServiceDir, sbatch_args: list[str], timeout: float) -> ServiceInfo:
    service.write(SBATCH_SCRIPT, sbatch_script(service.path).encode(), mode=0o700)
    script = service.file(SBATCH_SCRIPT)
    out = run_checked(["sbatch", "--parsable", *sbatch_args, str(script)], "sbatch")
    job_id = out.strip().split(";", 1)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = service.read_info()
        if info is not None and info.job_id == job_id:
            return info
        state = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False
        )
        if state.returncode == 0 and not state.stdout.strip() and time.monotonic() > deadline - 1:
            break
        time.sleep(1.0)
    subprocess.run(["scancel", job_id], capture_output=True, check=False)
    raise ServiceError(
        f"SLURM job {job_id} did not publish {service.file(SERVICE_FILE)} within "
        f"{timeout:.0f}s; see {service.file(job_log_name(job_id))}",
        path=str(service.path),
    )


def serve(service_dir: Path) -> int:
    """Run PostgreSQL in the foreground (inside a SLURM job) until it stops or is told to.

    Writes ``service.json`` once the server accepts connections and removes it on exit.

    Raises:
        ServiceError: the service directory does not exist.
        UntrustedFileError: it is not safely yours.
    """
    service = ServiceDir.open(service_dir)
    if service is None:
        raise ServiceError(f"no service directory {service_dir}", path=str(service_dir))
    with service:
        return serve_foreground(service)


# -- status / stop --------------------------------------------------------------------
def _accepting(info: ServiceInfo) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=info.host,
            port=info.port,
            user=info.user,
            password=info.password,
            dbname=info.database,
            connect_timeout=3,
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def service_status(service_dir: Path) -> tuple[bool, ServiceInfo | None]:
    """Return ``(accepting connections, service info or None)``.

    Raises:
        UntrustedFileError: the service file could have been written by another user
            (it is not used: no connection is attempted).
    """
    info = read_service(service_dir)
    if info is None:
        return False, None
    return _accepting(info), info


def stop_service(service_dir: Path, timeout: float = 60.0) -> ServiceInfo | None:
    """Stop the service of ``service_dir`` (no-op when none); return what was stopped.

    Raises:
        ServiceError: it could not be stopped.
        UntrustedFileError: the service file could have been written by another user
            (nothing it names is signalled, cancelled or stopped).
    """
    service = _open_existing(service_dir)
    if service is None:
        return None
    with service:
        info = service.read_info()
        if info is None:
            return None
        if info.mode == "slurm" and info.job_id:
            run_checked(["scancel", "--signal=TERM", "--full", info.job_id], "scancel")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and service.exists(SERVICE_FILE):
                time.sleep(0.5)
            run_checked(["scancel", info.job_id], "scancel")
        elif info.container:
            engine = info.mode
            subprocess.run([engine, "stop", info.container], capture_output=True, check=False)
            subprocess.run([engine, "rm", "-f", info.container], capture_output=True, check=False)
        else:
            stop_native(info, timeout)
        service.unlink(SERVICE_FILE)
    return info


# -- the store a service file advertises ----------------------------------------------
def _postgres_store(info: ServiceInfo, passfile: Path, root: Path | None) -> Store:
    from metalab.store.postgres import PostgresStore
    from metalab.store.postgres_config import PostgresConfig

    config = PostgresConfig(
        host=info.host,
        port=info.port,
        user=info.user,
        dbname=info.database,
        artifact_root=str(service_artifact_root(root)) if root is not None else None,
        libpq=(("passfile", str(passfile)),),
    )
    return PostgresStore(config)


def _trusted_service(service_file: Path) -> tuple[ServiceInfo, Path]:
    """The info of a trusted service file and the path of its trusted ``pgpass``."""
    service = _open_existing(service_file.parent)
    if service is None:
        raise ServiceError(f"no service file at {service_file}", path=str(service_file))
    with service:
        info = service.read_info()
        if info is None:
            raise ServiceError(f"no service file at {service_file}", path=str(service_file))
        return info, service.ensure_passfile(info)


def service_locator(service_dir: Path, store_root: str | os.PathLike[str] | None = None) -> str:
    """The locator of the service in ``service_dir``, usable as it is.

    It names the service's 0600 ``pgpass`` with ``passfile=`` (the password itself is
    never in it), so ``metalab.run``, ``load_results``, the CLI and workers of this user
    can all log in with it. With ``store_root``, large artifacts go under
    ``{store_root}/artifacts``, as when the service is discovered next to that store.

    Raises:
        ServiceError: there is no service file in ``service_dir``, or it is malformed.
        UntrustedFileError: the file, its ``pgpass`` or its directory is not safely yours.
    """
    info, passfile = _trusted_service(Path(service_dir) / SERVICE_FILE)
    root = None if store_root is None else Path(store_root).expanduser().absolute()
    return str(_postgres_store(info, passfile, root).locator)


def store_from_service_file(path: str | os.PathLike[str], file_store: Store | None = None) -> Store:
    """Build the PostgresStore advertised by a ``service.json``.

    The password stays in the service directory's 0600 ``pgpass`` file, referenced by
    the locator's ``passfile=``, so the locator (shipped to workers) never contains it.
    Large artifacts go under ``{file_store}/artifacts`` when a FileStore is given.

    Raises:
        ServiceError: there is no service file at ``path``, or it is malformed.
        UntrustedFileError: the file, its ``pgpass`` or its directory is not yours or
            is writable by group/others (another user could have written it).
    """
    info, passfile = _trusted_service(Path(path))
    return _postgres_store(info, passfile, None if file_store is None else file_store.directory)


def discover_service(file_store: Store) -> Store | None:
    """The PostgresStore advertised next to a FileStore, or ``None`` when there is none.

    Looks for ``{root}/services/postgres/service.json``; when one is used, says so once
    per process (a :class:`UserWarning` naming the file and host/port, never the password).

    Raises:
        UntrustedFileError: a service file is there but is not safely yours; nothing
            was connected to.
    """
    root = file_store.directory
    if root is None:
        return None  # only a directory can advertise a service
    service_file = default_service_dir(root) / SERVICE_FILE
    try:
        os.lstat(service_file)
    except (FileNotFoundError, NotADirectoryError):
        return None
    info, passfile = _trusted_service(service_file)
    store = _postgres_store(info, passfile, root)
    _announce(service_file, info, root)
    return store


def _announce(service_file: Path, info: ServiceInfo, root: Path) -> None:
    with _announced_lock:
        if str(service_file) in _announced:
            return
        _announced.add(str(service_file))
    warnings.warn(
        f"metalab: using {info.describe()}, advertised by {service_file}, instead of the "
        f"FileStore at {root}",
        UserWarning,
        stacklevel=5,  # the caller of metalab.run
    )


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        return serve(Path(argv[1]))
    print("usage: python -m metalab.service serve SERVICE_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_main(sys.argv[1:]))
