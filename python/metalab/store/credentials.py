"""Database passwords for worker processes: handed over beside the locator, never in it.

A locator never carries a password (:meth:`PostgresConfig.locator` drops it, so that it
can be shown, logged and stored), yet a worker rebuilds its store from the locator alone.
So the driver hands the passwords of the store's PostgreSQL connections over out of band,
one mechanism per executor:

* **ProcessExecutor**: over the worker's private pipe, before the experiment spec.
* **SLURM**: in a password file created ``0600`` in a private directory
  (``~/.metalab/credentials``, or ``$METALAB_CREDENTIALS_DIR`` on clusters whose nodes do
  not share the home directory), one per submission, named by ``--passfile`` on the
  worker's command line (a path, not a secret) and removed when the launch finishes. Its
  lines have the PGPASSFILE layout ``host:port:database:user:password`` (``\\``-escaped);
  the worker reads it only when it is a regular file of its own user that nobody else can
  read (:mod:`metalab.trust`). The same directory holds the submission's log alias when
  sbatch cannot name the store's log directory (:mod:`metalab.executors.slurm_paths`).

Never in argv, the batch script, a blob, a record or a log. In the worker,
:func:`install` registers what was handed over and :meth:`PostgresConfig.parse` fills a
locator's missing password from it (same host, port, database and user); then
:func:`verify_login` logs in once before any run, so that a refused login stops the worker
with the server's reason instead of failing runs after they executed, and a
:class:`FallbackStore` never diverts every record to its fallback for want of a password.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metalab.errors import StoreAuthError, StoreError, StoreUnavailableError, UntrustedFileError
from metalab.store.redaction import redact, remember_secret
from metalab.trust import describe_owner, read_trusted, verify_trusted

if TYPE_CHECKING:
    from metalab.store.base import Store
    from metalab.store.postgres_config import PostgresConfig

__all__ = [
    "CREDENTIALS_DIR_ENV",
    "Credential",
    "alias_path",
    "configs_of",
    "connect_checked",
    "connect_once",
    "credentials_dir",
    "credentials_of",
    "handed_over_password",
    "install",
    "login_refused",
    "make_alias",
    "passfile_path",
    "read_passfile",
    "remove_alias",
    "remove_passfile",
    "store_passfile",
    "verify_login",
    "write_passfile",
]

CREDENTIALS_DIR_ENV = "METALAB_CREDENTIALS_DIR"
"""Environment variable naming the private directory of password files (and aliases)."""

_Key = tuple[str, str, str, str]
_INSTALLED: dict[_Key, str] = {}
_INSTALLED_LOCK = threading.Lock()
# libpq's own wording when the server was reached but refused this login (SQLSTATE is
# not set on connection errors). Anything else (refused, timed out, "starting up",
# "too many clients") is an outage the store reports itself, and FallbackStore may
# legitimately fail over for it.
_LOGIN_REFUSED = re.compile(
    r"fe_sendauth|authentication failed|no pg_hba\.conf entry|password|"
    r"role \S+ does not exist|database \S+ does not exist|permission denied",
    re.IGNORECASE,
)
_PASSFILE_HEADER = "# metalab: PostgreSQL passwords of one SLURM submission (removed after)\n"


@dataclass(frozen=True)
class Credential:
    """The password of one PostgreSQL login (``""`` for a field the locator leaves out)."""

    host: str
    port: str
    dbname: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def of(cls, config: PostgresConfig) -> Credential | None:
        """The credential a config logs in with, or None when it has no password."""
        if not config.password:
            return None
        key = _key(config.host, config.port, config.dbname, config.user)
        return cls(*key, password=config.password)

    @property
    def key(self) -> _Key:
        """``(host, port, dbname, user)``: what a handed-over password is matched on."""
        return (self.host, self.port, self.dbname, self.user)


def _key(host: str | None, port: int | None, dbname: str | None, user: str | None) -> _Key:
    return (host or "", "" if port is None else str(port), dbname or "", user or "")


def configs_of(store: Store) -> list[PostgresConfig]:
    """The PostgreSQL connection settings ``store`` uses (none for a FileStore)."""
    return store.connection_configs()


def credentials_of(store: Store) -> list[Credential]:
    """The passwords a worker needs to open ``store`` from its locator."""
    found = (Credential.of(config) for config in configs_of(store))
    return list({c.key: c for c in found if c is not None}.values())


# -- the worker side ------------------------------------------------------------------
def install(credentials: Iterable[Credential]) -> None:
    """Make handed-over passwords available to :meth:`PostgresConfig.parse` (workers)."""
    given = list(credentials)
    with _INSTALLED_LOCK:
        for credential in given:
            _INSTALLED[credential.key] = credential.password
    for credential in given:
        remember_secret(credential.password)  # masked in any message or log line


def handed_over_password(
    host: str | None, port: int | None, dbname: str | None, user: str | None
) -> str | None:
    """The password handed over for this login, or None (then libpq's sources apply)."""
    with _INSTALLED_LOCK:
        return _INSTALLED.get(_key(host, port, dbname, user))


def login_refused(reason: str) -> bool:
    """True when a libpq connection error says the server refused this login (as opposed
    to being unreachable, starting up or full)."""
    return _LOGIN_REFUSED.search(reason) is not None


_LOGIN_ADVICE = (
    "give the password in the locator, PGPASSWORD, ~/.pgpass or a passfile= parameter "
    "(metalab postgres start prints a locator with one)"
)


def connect_once(config: PostgresConfig, advice: str = _LOGIN_ADVICE) -> None:
    """Open and close one direct connection with ``config``; say why when it fails.

    Raises:
        StoreAuthError: the server refused the login (see :func:`connect_checked`).
        StoreUnavailableError: the server cannot be reached (refused, timed out, ...).
    """
    connect_checked(config, advice).close()


def connect_checked(config: PostgresConfig, advice: str = _LOGIN_ADVICE) -> Any:
    """One direct autocommit connection with ``config``; say why when it fails.

    A full server (hundreds of array tasks at once) is waited for with backoff
    (:mod:`metalab.store.pg_backoff`): that is load, not an outage. libpq's own reason
    for any other failure is in the error, e.g. a refused login.

    Raises:
        StoreAuthError: the server refused the login (e.g. ``fe_sendauth: no password
            supplied``, ``password authentication failed``), then ``advice``.
        StoreUnavailableError: the server cannot be reached (refused, timed out, ...).
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    from metalab.store.pg_backoff import connect_with_backoff, failure_text

    conninfo = make_conninfo("", **config.conninfo_kwargs())
    try:
        return connect_with_backoff(
            lambda: psycopg.connect(conninfo, autocommit=True),
            config.locator(),
            answers=config.port_answers,
        )
    except psycopg.OperationalError as exc:
        # libpq's text spans lines ("... failed: X\n\tIs the server running ..."): one
        # line reads better in a warning, a log or a CLI message.
        reason = redact(failure_text(exc))
        if login_refused(reason):
            raise StoreAuthError(
                f"cannot log in to PostgreSQL store {config.locator()}: {reason}; {advice}",
                locator=config.locator(),
            ) from None
        raise StoreUnavailableError(
            f"PostgreSQL store {config.locator()} unavailable: {reason}", locator=config.locator()
        ) from None


def verify_login(store: Store) -> None:
    """Log in once to every PostgreSQL database of ``store``, before any run executes.

    An unreachable server passes (the store reports it when used, and a FallbackStore
    then rightly writes to its fallback); only a server that answers and refuses the
    login fails here.

    Raises:
        StoreAuthError: the server refused the login; the message has its reason, with
            any password masked.
    """
    advice = (
        "the worker ran nothing; give the password in the locator (it is handed to "
        "workers out of band), PGPASSWORD or ~/.pgpass of this account"
    )
    for config in configs_of(store):
        try:
            connect_once(config, advice)
        except StoreUnavailableError:
            continue


# -- password files (SLURM) -----------------------------------------------------------
def credentials_dir() -> Path:
    """``$METALAB_CREDENTIALS_DIR`` if set, else ``~/.metalab/credentials``."""
    override = os.environ.get(CREDENTIALS_DIR_ENV, "").strip()
    if override:
        # Absolute: the worker reads it from another working directory.
        return Path(os.path.abspath(os.path.expanduser(override)))
    return Path.home() / ".metalab" / "credentials"


def _private_path(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}", name):
        raise StoreError(f"invalid private file name {name!r}: expected [A-Za-z0-9._-]")
    return credentials_dir() / name


def passfile_path(name: str) -> Path:
    """Where the password file ``name`` (e.g. a SLURM submission id) lives."""
    return _private_path(f"{name}.pgpass")


def alias_path(name: str) -> Path:
    """Where the private alias ``name`` (see :func:`make_alias`) lives."""
    return _private_path(f"{name}.alias")


def make_alias(name: str, target: str) -> Path:
    """Create a symlink ``name`` -> ``target`` in the private directory; return its path.

    SLURM jobs write their logs through it when the real directory's path cannot be
    given to sbatch. In the private directory, nobody else can point it elsewhere (and
    make a job truncate a file of ours).

    Raises:
        StoreError: another alias of that name points elsewhere.
        UntrustedFileError: the private directory is not safely ours.
    """
    path = alias_path(name)
    _private_directory(path.parent)
    try:
        os.symlink(target, path)
    except FileExistsError:
        if not path.is_symlink() or os.readlink(path) != target:
            raise StoreError(
                f"{str(path)!r} exists and is not an alias of {target!r}", path=str(path)
            ) from None
    return path


def remove_alias(name: str) -> None:
    """Delete the private alias ``name`` if it exists."""
    alias_path(name).unlink(missing_ok=True)


def _private_directory(directory: Path) -> None:
    """Create ``directory`` (0700) and check that it is ours and closed to everyone else.

    Nobody else can then list, read or plant files in it. The files themselves are
    created exclusively and checked again (owner, mode, no symlink) when read, so a parent
    directory that others could write does not let them slip a file in.

    Raises:
        UntrustedFileError: it is foreign-owned, a symlink, or open to others.
        StoreError: it cannot be created.
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the private directory {str(directory)!r} for PostgreSQL "
            f"password files: {exc.strerror or exc}; create it (mode 0700) or set "
            f"${CREDENTIALS_DIR_ENV}",
            path=str(directory),
        ) from None
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedFileError(
            f"refusing to keep passwords in {str(directory)!r}: not a directory (a "
            f"symbolic link owned by {describe_owner(st.st_uid)}?)",
            path=str(directory),
            owner_uid=st.st_uid,
            mode=stat.S_IMODE(st.st_mode),
        )
    verify_trusted(st, directory, "password file directory", private=True)


def _escape(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise StoreError("a PostgreSQL connection field contains a line break")
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _split(line: str) -> list[str]:
    fields, current, chars = [], [], iter(line)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def write_passfile(name: str, credentials: Iterable[Credential]) -> Path:
    """Write a new password file ``name`` readable by this user only; return its path.

    Created with ``O_EXCL | O_NOFOLLOW`` and mode 0600 in the private directory, so no
    other user can have planted, linked or read it.

    Raises:
        StoreError: the file exists already or cannot be written.
        UntrustedFileError: the directory is not safely ours.
    """
    path = passfile_path(name)
    _private_directory(path.parent)
    lines = [_PASSFILE_HEADER]
    for c in credentials:
        lines.append(":".join(_escape(v) for v in (*c.key, c.password)) + "\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot create password file {str(path)!r}: {exc.strerror}", path=str(path)
        ) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


def read_passfile(path: str | os.PathLike[str]) -> list[Credential]:
    """Read a password file written by :func:`write_passfile`.

    Raises:
        UntrustedFileError: it is a symlink, foreign-owned or readable by others.
        StoreError: it is missing or malformed (the message says what to check).
    """
    data = read_trusted(path, "PostgreSQL password file", private=True)
    if data is None:
        raise StoreError(
            f"the PostgreSQL password file {str(path)!r} of this submission does not exist: "
            f"it is removed when the launch finishes; if this node does not see the "
            f"submitting host's home directory, set ${CREDENTIALS_DIR_ENV} to a private "
            f"directory on shared storage before submitting",
            path=str(path),
        )
    found = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = _split(line)
        if len(fields) != 5:
            raise StoreError(
                f"PostgreSQL password file {str(path)!r}, line {number}: expected "
                f"host:port:database:user:password, got {len(fields)} fields",
                path=str(path),
            )
        found.append(Credential(*fields))
    return found


def remove_passfile(name: str) -> None:
    """Delete the password file ``name`` if it exists (its launch finished)."""
    passfile_path(name).unlink(missing_ok=True)


# -- password files of serialised stores (to_locator) ---------------------------------
_STORE_PASSFILE_HEADER = "# metalab: PostgreSQL password of a store locator (to_locator)\n"


def _libpq_field(value: str) -> str:
    # libpq matches an absent host/port against "localhost"/5432, never against "":
    # a field the locator leaves out matches anything instead.
    return _escape(value) if value else "*"


def store_passfile(credential: Credential) -> Path:
    """A private libpq password file holding ``credential``; return its path.

    One file per login (host, port, database, user; named by a hash of them), created
    0600 in the private directory of :func:`credentials_dir`, left as it is when it
    holds this password already and atomically replaced when the login's password
    changed (the file holds each login's latest password, so files do not pile up). A
    locator can then name it with ``passfile=`` and stay free of the password, in this
    process and any later one of this user.

    Raises:
        UntrustedFileError: the directory or an existing file of that name is not safely
            ours (it is then left alone).
        StoreError: the file cannot be written.
    """
    import hashlib
    import secrets

    line = ":".join(_libpq_field(v) for v in credential.key) + ":" + _escape(credential.password)
    text = _STORE_PASSFILE_HEADER + line + "\n"
    login = "\0".join(credential.key).encode()
    path = passfile_path(f"store-{hashlib.sha256(login).hexdigest()[:24]}")
    _private_directory(path.parent)
    existing = read_trusted(path, "PostgreSQL password file", private=True)
    if existing is not None and existing.decode("utf-8", errors="replace") == text:
        return path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")  # unique per writer
    try:
        fd = os.open(temp, flags, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot create password file {str(temp)!r}: {exc.strerror}", path=str(temp)
        ) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(fd)
        # Published complete or not at all: a concurrent reader never sees half a line.
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path
