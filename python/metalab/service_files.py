"""The files of a PostgreSQL service directory, used only when they are provably yours.

A service directory (default ``~/.metalab/postgres``, or ``{store}/services/postgres``)
holds:

``service.json`` (0600)
    host, port, user, database, password, data_dir, pid, mode, job_id, container: what
    ``metalab.run`` reads to switch a FileStore to PostgreSQL, and status/stop to act.
``pgpass`` (0600)
    the same password in libpq's passfile format; store locators point at it with
    ``passfile=`` so they never carry the password themselves.
``data-location`` (0600)
    where the server's data directory is when it cannot be ``data/`` here (root's
    private scratch directory under ``/var/tmp``, whose name is random).
``data/``
    the server's data directory, when the server user can enter this directory.
``container.env`` (0600), ``postgres.sbatch`` (0700), ``slurm-<job>.out``
    container and SLURM mode.

Every name above is a constant (or :func:`job_log_name`) of this module: nothing else
spells them.

Whoever can write a file here can redirect your runs to their database, so the directory
must be yours and not writable by group/others (it is created 0700), and every file is
opened relative to the directory's descriptor and checked with :mod:`metalab.trust`.
Files are created with their final mode from the first byte, never chmod-ed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from types import TracebackType

from metalab.errors import ServiceError
from metalab.store.atomic import temp_name
from metalab.trust import open_trusted_dir, read_trusted

__all__ = [
    "CONTAINER_ENV",
    "DATA_DIR",
    "DATA_LOCATION",
    "DB_NAME",
    "DB_USER",
    "PASSFILE",
    "SBATCH_SCRIPT",
    "SERVICE_FILE",
    "ServiceDir",
    "ServiceInfo",
    "default_service_dir",
    "job_log_name",
    "service_artifact_root",
]

DB_USER = "metalab"
DB_NAME = "metalab"
SERVICE_FILE = "service.json"
PASSFILE = "pgpass"
DATA_LOCATION = "data-location"
DATA_DIR = "data"
CONTAINER_ENV = "container.env"
SBATCH_SCRIPT = "postgres.sbatch"


def job_log_name(job_id: str) -> str:
    """Name of the SLURM server job's log; ``job_log_name("%j")`` is its ``--output`` pattern."""
    return f"slurm-{job_id}.out"


# What each file is, for messages; secrets are also refused when group/other-readable.
_WHAT = {
    SERVICE_FILE: "service file",
    PASSFILE: "PostgreSQL password file",
    DATA_LOCATION: "data location file",
}
_SECRETS = {PASSFILE}


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


def service_artifact_root(store: str | os.PathLike[str]) -> Path:
    """``{store}/artifacts``: where the PostgreSQL service a FileStore advertises keeps
    artifact files (the database holds their rows, the files stay next to the store)."""
    return Path(store) / "artifacts"


def _parse_info(raw: bytes, path: Path) -> ServiceInfo:
    """``ServiceInfo`` from the bytes of ``service.json``; unknown keys are ignored."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ServiceError(f"{path} is not valid JSON: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise ServiceError(
            f"{path} must hold a JSON object, got {type(data).__name__}", path=str(path)
        )
    known = {f.name for f in fields(ServiceInfo)}
    missing = [f.name for f in fields(ServiceInfo) if f.default is MISSING and f.name not in data]
    if missing:
        raise ServiceError(
            f"{path} lacks {', '.join(missing)}; expected a metalab service file",
            path=str(path),
        )
    port = data["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ServiceError(f"{path}: port must be an integer in 1..65535, got {port!r}")
    return ServiceInfo(**{k: v for k, v in data.items() if k in known})


class ServiceDir:
    """An open, verified service directory; every file in it is reached through its fd.

    Get one with :meth:`open` or :meth:`create` (a context manager): holding the
    descriptor means a parent directory renamed or replaced by a co-user afterwards
    changes nothing.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ServiceDir | None:
        """Open an existing service directory; ``None`` if it does not exist.

        Raises:
            UntrustedFileError: it (or an ancestor) is a symlink another user could have
                planted, or it is not yours, or group/others can write it.
        """
        resolved = Path(path).expanduser().absolute()
        fd = open_trusted_dir(resolved, "service directory")
        return None if fd is None else cls(resolved, fd)

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> ServiceDir:
        """Open a service directory, making it and missing parents 0700 (whatever the umask).

        Raises:
            UntrustedFileError: as :meth:`open`, for an existing directory or ancestor.
        """
        resolved = Path(path).expanduser().absolute()
        fd = open_trusted_dir(resolved, "service directory", create=True)
        if fd is None:  # pragma: no cover - create=True makes what is missing
            raise ServiceError(
                f"could not create the service directory {resolved}", path=str(resolved)
            )
        return cls(resolved, fd)

    @property
    def fd(self) -> int:
        """The directory's descriptor (valid until :meth:`close`)."""
        return self._fd

    def close(self) -> None:
        """Release the descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ServiceDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def file(self, name: str) -> Path:
        """The path of ``name`` here, for tools that take paths (libpq, sbatch, pg_ctl)."""
        return self.path / name

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name``, or ``None`` when it does not exist.

        Raises:
            UntrustedFileError: the file is a symlink, foreign-owned or group/other-writable
                (secrets such as ``pgpass``: also group/other-readable).
        """
        what = _WHAT.get(name, f"service file {name!r}")
        return read_trusted(self.file(name), what, private=name in _SECRETS, dir_fd=self._fd)

    def write(self, name: str, data: bytes, *, mode: int = 0o600) -> None:
        """Atomically replace ``name`` with ``data``, created with ``mode`` from the start."""
        tmp = temp_name(self.file(name)).name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, mode, dir_fd=self._fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            os.unlink(tmp, dir_fd=self._fd)
            raise

    def unlink(self, name: str) -> None:
        """Remove ``name`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._fd)

    def exists(self, name: str) -> bool:
        """True when an entry ``name`` exists (whatever it is; nothing is followed)."""
        try:
            os.lstat(name, dir_fd=self._fd)
        except FileNotFoundError:
            return False
        return True

    def read_info(self) -> ServiceInfo | None:
        """The service described by ``service.json``, or ``None`` when there is none.

        Raises:
            UntrustedFileError: the service file could have been written by someone else.
            ServiceError: it is not a metalab service file.
        """
        raw = self.read(SERVICE_FILE)
        return None if raw is None else _parse_info(raw, self.file(SERVICE_FILE))

    def write_info(self, info: ServiceInfo) -> None:
        """Publish ``info`` as ``service.json`` (0600: it holds the password)."""
        self.write(SERVICE_FILE, json.dumps(asdict(info), indent=2).encode())

    def password(self) -> str:
        """The password kept in ``pgpass`` (reused with an existing cluster), else a new one."""
        raw = self.read(PASSFILE)
        for line in (raw or b"").decode(errors="replace").splitlines():
            if line.startswith("*:*:*:"):
                return line.rsplit(":", 1)[1]
        password = secrets.token_hex(24)  # hex: nothing to escape in pgpass or conninfo
        self.write_passfile(DB_USER, password)
        return password

    def write_passfile(self, user: str, password: str) -> None:
        """Write ``pgpass`` in libpq's format (``*:*:*:user:password``)."""
        self.write(PASSFILE, f"*:*:*:{user}:{password}\n".encode())

    def ensure_passfile(self, info: ServiceInfo) -> Path:
        """The path of a trusted ``pgpass`` for ``info`` (written when missing)."""
        if self.read(PASSFILE) is None:
            self.write_passfile(info.user, info.password)
        return self.file(PASSFILE)

    def recorded_data_dir(self) -> Path | None:
        """The data directory recorded by an earlier start, if any."""
        raw = self.read(DATA_LOCATION)
        if raw is None:
            return None
        text = raw.decode(errors="replace").strip()
        if not os.path.isabs(text):
            raise ServiceError(
                f"{self.file(DATA_LOCATION)} must hold an absolute path, got {text!r}",
                path=str(self.file(DATA_LOCATION)),
            )
        return Path(text)

    def record_data_dir(self, data_dir: Path) -> None:
        """Remember where the data directory is, for later starts, ``status`` and ``stop``."""
        self.write(DATA_LOCATION, f"{data_dir}\n".encode())
