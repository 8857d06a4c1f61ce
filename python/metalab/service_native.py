"""PostgreSQL's own binaries run by metalab: where the data lives, initdb, start, stop.

PostgreSQL refuses to run as root, so when invoked as root the server runs as the
unprivileged ``postgres`` user (``Popen(user=...)``, the same setuid that runuser does),
and its data directory must be one that user can reach and own:

* ``{service_dir}/data`` when the server user can traverse the service directory;
* otherwise (a 0700 service directory, a 0700 home) a private scratch directory
  ``/var/tmp/metalab-postgres-XXXXXXXX/data``. The top is made by ``mkdtemp``
  (exclusive, unpredictable name) and kept root's with mode 0711, so in the sticky
  ``/var/tmp`` nobody else can rename, replace or fill it; ``data`` inside is made 0700
  and handed to the server user with ``fchown``. Its path is recorded in the service
  directory (``data-location``) so later starts reuse the cluster, and it is verified
  again each time. A directory of earlier versions at the predictable
  ``/var/tmp/metalab-postgres/<digest>/data`` is adopted only when its whole chain is
  provably root's and the server user's; anything else found there is left alone.

Each directory is opened with ``O_NOFOLLOW|O_DIRECTORY``, checked on the descriptor and
changed only through it (``fchown``, ``fchmod``, ``openat``): nothing here follows a
symlink someone planted, whatever the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metalab.errors import ServiceError, UntrustedFileError
from metalab.service_files import DATA_DIR, DB_NAME, DB_USER, ServiceDir, ServiceInfo
from metalab.trust import open_trusted_dir, verify_trusted

__all__ = [
    "SCRATCH_ROOT",
    "UNPRIVILEGED_USER",
    "as_server_user",
    "find_bin_dir",
    "free_port",
    "initdb",
    "pid_alive",
    "postmaster_pid",
    "prepare_data_dir",
    "run_checked",
    "serve_foreground",
    "server_options",
    "start_native",
    "stop_native",
    "wait_ready",
]

UNPRIVILEGED_USER = "postgres"
#: Where root's scratch data directories go: sticky and world-writable like /tmp, but
#: not emptied at boot. (Read at each call, so tests can point it at a fresh directory.)
SCRATCH_ROOT = Path("/var/tmp")
_DATA = "PostgreSQL data directory"


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


def free_port() -> int:
    """A free TCP port; never 5432, so a managed server cannot collide with a system one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def as_server_user() -> dict[str, Any]:
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


def run_checked(cmd: list[str], what: str, **kwargs: Any) -> str:
    """Run ``cmd``; its stdout, or a :class:`ServiceError` with the end of its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return str(done.stdout)


# -- the data directory ---------------------------------------------------------------
@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _data_subdir(parent_fd: int, path: Path, ids: tuple[int, int] | None) -> int:
    """Open (creating it 0700) the data directory ``path`` under ``parent_fd``.

    As root it must belong to the server user; a new one is handed over by descriptor.
    """
    owner = None if ids is None else ids[0]
    fd = open_trusted_dir(path, _DATA, create=True, dir_fd=parent_fd, owner=owner)
    if fd is None:  # pragma: no cover - create=True always yields a directory
        raise ServiceError(f"could not create {path}")
    if ids is not None and os.fstat(fd).st_uid != ids[0]:
        os.fchown(fd, *ids)
    return fd


def _adopt_legacy(service_path: Path, ids: tuple[int, int]) -> tuple[Path, int] | None:
    """The predictable data directory of earlier versions, if provably root's own."""
    digest = hashlib.sha256(str(service_path).encode()).hexdigest()[:12]
    legacy = SCRATCH_ROOT / "metalab-postgres"
    data = legacy / digest / "data"
    what = "earlier scratch directory"
    try:
        top = open_trusted_dir(legacy, what)
        if top is None:
            return None
        with _closing(top):
            sub = open_trusted_dir(data.parent, what, dir_fd=top)
        if sub is None:
            return None
        with _closing(sub):
            fd = open_trusted_dir(data, _DATA, dir_fd=sub, owner=ids[0])
    except UntrustedFileError:
        # Anyone can create that predictable path in /var/tmp: what they made there is
        # never used nor touched (refusing would let them block every start).
        return None
    return None if fd is None else (data, fd)


def _new_scratch(ids: tuple[int, int]) -> tuple[Path, int]:
    base = Path(tempfile.mkdtemp(prefix="metalab-postgres-", dir=SCRATCH_ROOT))
    base_fd = open_trusted_dir(base, "scratch directory")
    if base_fd is None:  # pragma: no cover - mkdtemp just made it
        raise ServiceError(f"{base} vanished right after its creation")
    with _closing(base_fd):
        os.fchmod(base_fd, 0o711)  # the server user may pass through; not list, not write
        return base / "data", _data_subdir(base_fd, base / "data", ids)


def prepare_data_dir(service: ServiceDir) -> tuple[Path, int]:
    """The server's data directory (created when missing) and an open descriptor of it.

    Raises:
        UntrustedFileError: the recorded or the ``data/`` directory was replaced by a
            symlink or a directory of someone else.
        ServiceError: root without a ``postgres`` user.
    """
    ids = _server_ids()
    preferred = service.file(DATA_DIR)
    if ids is None or _server_can_enter(service.path):
        return preferred, _data_subdir(service.fd, preferred, ids)
    recorded = service.recorded_data_dir()
    if recorded is not None:
        base_fd = open_trusted_dir(recorded.parent, "scratch directory")
        if base_fd is not None:
            with _closing(base_fd):
                return recorded, _data_subdir(base_fd, recorded, ids)
    found = _adopt_legacy(service.path, ids) or _new_scratch(ids)
    service.record_data_dir(found[0])
    return found


def _server_can_enter(directory: Path) -> bool:
    probe = subprocess.run(
        ["test", "-x", str(directory)], check=False, capture_output=True, **as_server_user()
    )
    return probe.returncode == 0


def _append_config(data_fd: int, data_dir: Path, name: str, text: str) -> None:
    """Append to a config file initdb made, through the data directory's descriptor.

    As root this writes into a directory the server user owns: a symlink put there must
    not turn the append into a write of some root file.
    """
    ids = _server_ids()
    owner = None if ids is None else ids[0]
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=data_fd)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ServiceError(f"{data_dir / name} is not a regular file")
        verify_trusted(st, data_dir / name, "PostgreSQL config file", owner=owner)
        handle.write(text)


def initdb(bin_dir: Path, data_dir: Path, data_fd: int, password: str, remote: bool) -> None:
    """Create the cluster (once) with password authentication for every connection."""
    try:
        os.lstat("PG_VERSION", dir_fd=data_fd)
    except FileNotFoundError:
        pass
    else:
        return  # already initialised: keep its data and password
    ids = _server_ids()
    fd, pwfile = tempfile.mkstemp(prefix="metalab-pw-")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            if ids is not None:
                os.fchown(handle.fileno(), *ids)
            handle.write(password + "\n")
        run_checked(
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
            **as_server_user(),
        )
    finally:
        os.unlink(pwfile)
    if remote:
        # SLURM workers connect from other nodes: accept them, always with a password.
        _append_config(
            data_fd,
            data_dir,
            "pg_hba.conf",
            "host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n",
        )
    _append_config(
        data_fd,
        data_dir,
        "postgresql.conf",
        "max_connections = 300\nunix_socket_directories = ''\n",
    )


def server_options(port: int, remote: bool) -> list[str]:
    """``postgres`` options: the port, and which addresses to listen on."""
    listen = "*" if remote else "127.0.0.1"
    return ["-p", str(port), "-c", f"listen_addresses={listen}"]


def wait_ready(host: str, port: int, password: str, timeout: float) -> None:
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


def postmaster_pid(data_dir: Path) -> int | None:
    """The server's pid from ``postmaster.pid`` (not followed if it is a symlink)."""
    try:
        fd = os.open(data_dir / "postmaster.pid", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            return int(handle.read(64).split(b"\n", 1)[0])
    except (OSError, ValueError):
        return None


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


# -- start / serve / stop -------------------------------------------------------------
def start_native(service: ServiceDir, port: int, timeout: float) -> ServiceInfo:
    """Start the server with ``pg_ctl`` and publish ``service.json``."""
    bin_dir = find_bin_dir()
    password = service.password()
    data_dir, data_fd = prepare_data_dir(service)
    with _closing(data_fd):
        initdb(bin_dir, data_dir, data_fd, password, remote=False)
    options = " ".join(shlex.quote(o) for o in server_options(port, remote=False))
    run_checked(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(data_dir / "metalab-postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        "pg_ctl start",
        **as_server_user(),
    )
    wait_ready("127.0.0.1", port, password, timeout)
    info = ServiceInfo(
        host="127.0.0.1",
        port=port,
        user=DB_USER,
        database=DB_NAME,
        password=password,
        data_dir=str(data_dir),
        pid=postmaster_pid(data_dir),
        mode="native",
    )
    service.write_info(info)
    return info


def serve_foreground(service: ServiceDir) -> int:
    """Run PostgreSQL in the foreground (inside a SLURM job) until it stops or is told to.

    Writes ``service.json`` once the server accepts connections and removes it on exit.
    """
    bin_dir = find_bin_dir()
    password = service.password()
    data_dir, data_fd = prepare_data_dir(service)
    with _closing(data_fd):
        initdb(bin_dir, data_dir, data_fd, password, remote=True)
        if not pid_alive(postmaster_pid(data_dir)):
            # A job killed hard leaves a stale pid file; the node (and pid space) may differ.
            with contextlib.suppress(FileNotFoundError):
                os.unlink("postmaster.pid", dir_fd=data_fd)
    port = free_port()
    proc = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data_dir), *server_options(port, remote=True)],
        **as_server_user(),
    )

    def shutdown(signum: int, frame: Any) -> None:
        proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        wait_ready("127.0.0.1", port, password, 120.0)
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
        service.write_info(info)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        service.unlink("service.json")


def stop_native(info: ServiceInfo, timeout: float) -> None:
    """Stop a server started by :func:`start_native` (no-op when it is not running)."""
    data_dir = Path(info.data_dir)
    if not (data_dir / "postmaster.pid").exists():
        return
    run_checked(
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
        **as_server_user(),
    )
