"""A managed PostgreSQL server for metalab: local (Docker/Podman or native) or a SLURM job.

State lives in a *service directory* (default ``~/.metalab/postgres``, or
``{store}/services/postgres`` with ``--store``):

``service.json`` (mode 0600)
    host, port, user, database, password, data_dir, pid, mode, job_id — what workers read
    to connect (``metalab.run`` finds it next to a FileStore and switches to PostgreSQL).
``pgpass`` (mode 0600)
    the same password in libpq's passfile format; store locators point at it with
    ``passfile=`` so they never carry the password themselves.

Both files are created with mode 0600 from the first byte (never chmod-ed afterwards).
PostgreSQL refuses to run as root, so when invoked as root the server runs as the
unprivileged ``postgres`` user (``Popen(user=...)``, the same setuid that runuser does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from metalab.errors import ServiceError
from metalab.store.atomic import atomic_write

__all__ = [
    "ServiceInfo",
    "default_service_dir",
    "service_status",
    "start_service",
    "stop_service",
    "store_from_service_file",
]

DB_USER = "metalab"
DB_NAME = "metalab"
UNPRIVILEGED_USER = "postgres"
_IMAGE = "docker.io/library/postgres:16"


@dataclass
class ServiceInfo:
    """The content of ``service.json``."""

    host: str
    port: int
    user: str
    database: str
    password: str
    data_dir: str
    pid: int | None
    mode: str  # "native", "docker", "podman" or "slurm"
    job_id: str | None = None
    container: str | None = None

    def __repr__(self) -> str:  # never show the password
        return (
            f"ServiceInfo(mode={self.mode!r}, host={self.host!r}, port={self.port}, "
            f"user={self.user!r}, database={self.database!r}, pid={self.pid}, "
            f"job_id={self.job_id!r})"
        )

    def describe(self) -> str:
        """A one-line, password-free description."""
        where = f"{self.user}@{self.host}:{self.port}/{self.database}"
        extra = f" job {self.job_id}" if self.job_id else f" pid {self.pid}" if self.pid else ""
        return f"PostgreSQL ({self.mode}{extra}) at {where}"


def default_service_dir(store: str | os.PathLike[str] | None = None) -> Path:
    """``{store}/services/postgres`` for a store, else ``~/.metalab/postgres``."""
    if store is not None:
        return Path(store).expanduser().absolute() / "services" / "postgres"
    return Path.home() / ".metalab" / "postgres"


def _service_file(service_dir: Path) -> Path:
    return service_dir / "service.json"


def _write_secret(path: Path, text: str) -> None:
    # atomic_write creates the temporary file with this mode: never readable by others.
    atomic_write(path, text.encode(), mode=0o600)


def read_service(service_dir: Path) -> ServiceInfo | None:
    """Return the service described in ``service_dir``, or ``None``."""
    try:
        data = json.loads(_service_file(service_dir).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ServiceError(f"{_service_file(service_dir)} is not valid JSON: {exc}") from None
    known = set(ServiceInfo.__dataclass_fields__)
    return ServiceInfo(**{k: v for k, v in data.items() if k in known})


def _password(service_dir: Path) -> str:
    """Reuse the password of an existing data dir, else generate one (kept in pgpass)."""
    passfile = service_dir / "pgpass"
    try:
        for line in passfile.read_text().splitlines():
            if line.startswith("*:*:*:"):
                return line.rsplit(":", 1)[1]
    except FileNotFoundError:
        pass
    password = secrets.token_hex(24)  # hex: nothing to escape in pgpass or conninfo
    _write_secret(passfile, f"*:*:*:{DB_USER}:{password}\n")
    return password


# -- discovery ------------------------------------------------------------------------
def find_bin_dir() -> Path:
    """Directory of the native server binaries (``PATH``, then /usr/lib/postgresql/*/bin).

    Raises:
        ServiceError: PostgreSQL is not installed.
    """
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise ServiceError(
            "no PostgreSQL server binaries (pg_ctl, initdb) on PATH or in "
            "/usr/lib/postgresql/*/bin; install postgresql or a container engine"
        )
    return candidates[-1].parent


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


def _free_port() -> int:
    # Not 5432, so a managed server never collides with a system/CI server.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that drop root to the unprivileged server user (else nothing)."""
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED_USER, "group": UNPRIVILEGED_USER, "extra_groups": []}


def _server_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise ServiceError(
            f"running as root needs the unprivileged user {UNPRIVILEGED_USER!r} "
            "(PostgreSQL refuses to run as root)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _data_dir(service_dir: Path) -> Path:
    """``{service_dir}/data``, or a per-service directory the server user can reach."""
    ids = _server_ids()
    preferred = service_dir / "data"
    if ids is None:
        return preferred
    probe = subprocess.run(
        ["test", "-x", str(service_dir)], check=False, capture_output=True, **_as_server_user()
    )
    if probe.returncode == 0:
        return preferred
    # e.g. /root is 0700: keep the data where the postgres user can reach it.
    digest = hashlib.sha256(str(service_dir).encode()).hexdigest()[:12]
    return Path("/var/tmp/metalab-postgres") / digest / "data"


def _run_checked(cmd: list[str], what: str, **kwargs: Any) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return str(done.stdout)


def _initdb(bin_dir: Path, data_dir: Path, password: str, remote: bool) -> None:
    """Create the cluster (once) with password authentication for every connection."""
    ids = _server_ids()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if ids is not None:
        os.chown(data_dir, *ids)  # only the data dir itself, never its parents
    if (data_dir / "PG_VERSION").exists():
        return
    fd, pwfile = tempfile.mkstemp(prefix="metalab-pw-")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if ids is not None:
            os.chown(pwfile, *ids)
        _run_checked(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ],
            "initdb",
            **_as_server_user(),
        )
    finally:
        os.unlink(pwfile)
    if remote:
        # SLURM workers connect from other nodes: accept them, always with a password.
        with open(data_dir / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
    with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("max_connections = 300\nunix_socket_directories = ''\n")


def _server_options(port: int, remote: bool) -> list[str]:
    listen = "*" if remote else "127.0.0.1"
    return ["-p", str(port), "-c", f"listen_addresses={listen}"]


def _wait_ready(host: str, port: int, password: str, timeout: float) -> None:
    """Wait until the server accepts a password login; create the database."""
    import psycopg

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(
                host=host,
                port=port,
                user=DB_USER,
                password=password,
                dbname="postgres",
                connect_timeout=3,
                autocommit=True,
            ) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
                ).fetchone()
                if exists is None:
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
                return
        except psycopg.Error as exc:
            last = str(exc).replace(password, "***")
            time.sleep(0.5)
    raise ServiceError(f"PostgreSQL on {host}:{port} did not become ready: {last}")


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
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
        service_dir: where service.json, pgpass and (usually) the data live.
        slurm: submit the server as a SLURM job instead of starting it here.
        port: TCP port (default: a free one, never 5432).
        engine: "auto" (Docker/Podman when an engine answers), "native", "docker", "podman".
        sbatch_args: extra sbatch options (partition, time...).
        timeout: seconds to wait for the server to accept connections.

    Raises:
        ServiceError: a server is already running there, or it could not be started.
    """
    service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = read_service(service_dir)
    if current is not None and service_status(service_dir)[0]:
        raise ServiceError(f"already running: {current.describe()} ({service_dir})")
    _service_file(service_dir).unlink(missing_ok=True)
    if slurm:
        return _start_slurm(service_dir, sbatch_args or [], timeout)
    chosen = container_engine() if engine == "auto" else (None if engine == "native" else engine)
    if chosen:
        return _start_container(service_dir, chosen, port or _free_port(), timeout)
    return _start_native(service_dir, port or _free_port(), timeout)


def _start_native(service_dir: Path, port: int, timeout: float) -> ServiceInfo:
    bin_dir = find_bin_dir()
    password = _password(service_dir)
    data_dir = _data_dir(service_dir)
    _initdb(bin_dir, data_dir, password, remote=False)
    log_file = data_dir / "metalab-postgres.log"
    options = " ".join(shlex.quote(o) for o in _server_options(port, remote=False))
    _run_checked(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        "pg_ctl start",
        **_as_server_user(),
    )
    _wait_ready("127.0.0.1", port, password, timeout)
    info = ServiceInfo(
        host="127.0.0.1",
        port=port,
        user=DB_USER,
        database=DB_NAME,
        password=password,
        data_dir=str(data_dir),
        pid=_postmaster_pid(data_dir),
        mode="native",
    )
    _write_secret(_service_file(service_dir), json.dumps(asdict(info), indent=2))
    return info


def _start_container(service_dir: Path, engine: str, port: int, timeout: float) -> ServiceInfo:
    password = _password(service_dir)
    data_dir = service_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = "metalab-postgres-" + hashlib.sha256(str(service_dir).encode()).hexdigest()[:12]
    env_file = service_dir / "container.env"
    # The password goes through a 0600 env file, not the command line (visible in ps).
    _write_secret(
        env_file,
        f"POSTGRES_USER={DB_USER}\nPOSTGRES_PASSWORD={password}\nPOSTGRES_DB={DB_NAME}\n",
    )
    subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False)
    _run_checked(
        [
            engine,
            "run",
            "-d",
            "--name",
            name,
            "--env-file",
            str(env_file),
            "-p",
            f"127.0.0.1:{port}:5432",
            "-v",
            f"{data_dir}:/var/lib/postgresql/data",
            _IMAGE,
        ],
        f"{engine} run",
    )
    _wait_ready("127.0.0.1", port, password, timeout)
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
    _write_secret(_service_file(service_dir), json.dumps(asdict(info), indent=2))
    return info


def sbatch_script(service_dir: Path, python: str = sys.executable) -> str:
    """The batch script of the SLURM server job (it runs :func:`serve` in the foreground)."""
    out = shlex.quote(str(service_dir / "slurm-%j.out"))
    return (
        "#!/bin/bash\n"
        "#SBATCH --job-name=metalab-postgres\n"
        f"#SBATCH --output={out}\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=1G\n"
        f"exec {shlex.quote(python)} -m metalab.service serve {shlex.quote(str(service_dir))}\n"
    )


def _start_slurm(service_dir: Path, sbatch_args: list[str], timeout: float) -> ServiceInfo:
    script = service_dir / "postgres.sbatch"
    atomic_write(script, sbatch_script(service_dir).encode(), mode=0o700)
    out = _run_checked(["sbatch", "--parsable", *sbatch_args, str(script)], "sbatch")
    job_id = out.strip().split(";", 1)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_service(service_dir)
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
        f"SLURM job {job_id} did not publish {_service_file(service_dir)} within {timeout:.0f}s; "
        f"see {service_dir}/slurm-{job_id}.out"
    )


def serve(service_dir: Path) -> int:
    """Run PostgreSQL in the foreground (inside a SLURM job) until it stops or is told to.

    Writes ``service.json`` once the server accepts connections and removes it on exit.
    """
    bin_dir = find_bin_dir()
    password = _password(service_dir)
    data_dir = _data_dir(service_dir)
    _initdb(bin_dir, data_dir, password, remote=True)
    if not pid_alive(_postmaster_pid(data_dir)):
        # A job killed hard leaves a stale pid file; the node (and pid space) may differ.
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data_dir), *_server_options(port, remote=True)],
        **_as_server_user(),
    )

    def shutdown(signum: int, frame: Any) -> None:
        proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        _wait_ready("127.0.0.1", port, password, 120.0)
        info = ServiceInfo(
            host=socket.gethostname(),  # what other nodes of the cluster resolve
            port=port,
            user=DB_USER,
            database=DB_NAME,
            password=password,
            data_dir=str(data_dir),
            pid=proc.pid,
            mode="slurm",
            job_id=os.environ.get("SLURM_JOB_ID"),
        )
        _write_secret(_service_file(service_dir), json.dumps(asdict(info), indent=2))
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        _service_file(service_dir).unlink(missing_ok=True)


# -- status / stop --------------------------------------------------------------------
def pid_alive(pid: int | None) -> bool:
    """True when a process ``pid`` exists on this host (``None`` or 0: False)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def service_status(service_dir: Path) -> tuple[bool, ServiceInfo | None]:
    """Return ``(accepting connections, service info or None)``."""
    info = read_service(service_dir)
    if info is None:
        return False, None
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
        return False, info
    return True, info


def stop_service(service_dir: Path, timeout: float = 60.0) -> ServiceInfo | None:
    """Stop the service of ``service_dir`` (no-op when none); return what was stopped.

    Raises:
        ServiceError: it could not be stopped.
    """
    info = read_service(service_dir)
    if info is None:
        return None
    if info.mode == "slurm" and info.job_id:
        _run_checked(["scancel", "--signal=TERM", "--full", info.job_id], "scancel")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _service_file(service_dir).exists():
            time.sleep(0.5)
        _run_checked(["scancel", info.job_id], "scancel")
    elif info.container:
        engine = info.mode
        subprocess.run([engine, "stop", info.container], capture_output=True, check=False)
        subprocess.run([engine, "rm", "-f", info.container], capture_output=True, check=False)
    else:
        data_dir = Path(info.data_dir)
        if (data_dir / "postmaster.pid").exists():
            _run_checked(
                [
                    str(find_bin_dir() / "pg_ctl"),
                    "-D",
                    str(data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "stop",
                ],
                "pg_ctl stop",
                **_as_server_user(),
            )
    _service_file(service_dir).unlink(missing_ok=True)
    return info


def store_from_service_file(path: str | os.PathLike[str], file_store: Any = None) -> Any:
    """Build the PostgresStore advertised by a ``service.json``.

    The password stays in the service directory's 0600 ``pgpass`` file, referenced by
    the locator's ``passfile=``, so the locator (shipped to workers) never contains it.
    Large artifacts go under ``{file_store}/artifacts`` when a FileStore is given.
    """
    from metalab.store.postgres import PostgresStore
    from metalab.store.postgres_config import PostgresConfig

    service_file = Path(path)
    info = read_service(service_file.parent)
    if info is None:
        raise ServiceError(f"no service file at {service_file}")
    passfile = service_file.parent / "pgpass"
    if not passfile.exists():
        _write_secret(passfile, f"*:*:*:{info.user}:{info.password}\n")
    root = getattr(file_store, "root", None)
    config = PostgresConfig(
        host=info.host,
        port=info.port,
        user=info.user,
        dbname=info.database,
        artifact_root=str(Path(root) / "artifacts") if root is not None else None,
        libpq=(("passfile", str(passfile)),),
    )
    return PostgresStore(config)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        return serve(Path(argv[1]))
    print("usage: python -m metalab.service serve SERVICE_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_main(sys.argv[1:]))
