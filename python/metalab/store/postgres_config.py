"""Parsing, validating and printing PostgreSQL store locators, and keeping secrets out.

A locator looks like ``postgresql://user@host:5432/db?schema=s&artifact_root=/data``.
The password may come from the locator, ``PGPASSWORD``, ``~/.pgpass`` (or a ``passfile=``
parameter) or a ``service=`` entry of ``pg_service.conf``; whichever it is, it is never
printed: :meth:`PostgresConfig.locator` drops it and :func:`redact` masks it in any text.
A password given in the locator reaches worker processes out of band
(:mod:`metalab.store.credentials`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from metalab.errors import LocatorError
from metalab.store.credentials import handed_over_password

# Re-exported: the secret masking lives in store/redaction.py (below credentials, which
# needs it too); the private set and lock are what tests save and restore.
from metalab.store.redaction import (  # noqa: F401
    _SECRETS,
    _SECRETS_LOCK,
    mask_locator,
    redact,
    remember_secret,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "PostgresConfig",
    "mask_locator",
    "redact",
    "remember_secret",
    "validate_schema",
]

DEFAULT_SCHEMA = "metalab"
# Lower-case, unquoted-identifier shape: safe to show, unambiguous, and still quoted with
# sql.Identifier wherever it reaches SQL (defence in depth).
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# libpq connection parameters we pass through untouched (documented libpq keywords).
_LIBPQ_PARAMS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "passfile",
    "service",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "options",
    "host",
    "port",
    "user",
    "dbname",
)
_METALAB_PARAMS = ("schema", "artifact_root", "pool_size", "inline_limit")
_ASCII_NUMBER = re.compile(r"[0-9]+")
_FORM = "postgresql://[user[:password]@]host[:port]/dbname[?param=value&...]"
_ENCODE_HINT = (
    "percent-encode '/', '?', '#', '%' and spaces in the user name and password, e.g. "
    "urllib.parse.quote(password, safe='')"
)


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case identifier, else raise LocatorError."""
    if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
        raise LocatorError(
            f"invalid PostgreSQL schema name {schema!r}: use 1-63 characters "
            "of a-z, 0-9 and _, not starting with a digit"
        )
    return schema


def _refuse_ambiguous_userinfo(locator: str, netloc: str, shown: str) -> None:
    """Refuse ``scheme://u:se/cr#t@host/db``-style locators (a password with an unencoded
    '/', '?' or '#' ends the host part early, so "host:port" would be made of it).

    Raises:
        LocatorError: no '@' in the host part, but one after it with a ':' before it.
    """
    rest = locator.split("://", 1)[-1]
    at = rest.rfind("@")
    if "@" in netloc or at < 0 or ":" not in rest[:at]:
        return
    colon = rest.index(":")
    remember_secret(rest[colon + 1 : at])  # most likely a password: masked from now on
    raise LocatorError(
        f"PostgreSQL locator {shown!r} is ambiguous: an '@' follows the host part. If what "
        f"precedes it is user:password, {_ENCODE_HINT}; if the '@' belongs to a parameter "
        f"value, write it as %40"
    )


@dataclass(frozen=True)
class PostgresConfig:
    """Everything needed to connect, minus nothing: ``password`` is kept but never shown."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    schema: str = DEFAULT_SCHEMA
    artifact_root: str | None = None
    pool_size: int = 4
    inline_limit: int = 1024 * 1024
    libpq: tuple[tuple[str, str], ...] = ()
    password: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_schema(self.schema)
        remember_secret(self.password)

    def __repr__(self) -> str:
        return f"PostgresConfig({self.locator()!r})"

    @classmethod
    def parse(cls, locator: str) -> PostgresConfig:
        """Parse a ``postgresql://`` / ``postgres://`` locator.

        Raises:
            LocatorError: malformed locator (the message shows it with the password masked).
        """
        # Masked before anything can fail: no error below may show the password.
        shown = mask_locator(locator)
        try:
            parts = urlsplit(locator)
            _refuse_ambiguous_userinfo(locator, parts.netloc, shown)
            password = unquote(parts.password) if parts.password is not None else None
            port = parts.port
        except ValueError as exc:
            if isinstance(exc, LocatorError):
                raise
            # urlsplit's own messages quote parts of the netloc, which may hold a password
            # split at an unencoded '/' ("Port could not be cast ... 'sec'"): not shown.
            what = "the port must be a number in 0-65535" if "Port" in str(exc) else _FORM
            raise LocatorError(
                f"malformed PostgreSQL locator {shown!r}: {what}; {_ENCODE_HINT}"
            ) from None
        remember_secret(password)
        shown = mask_locator(locator)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise LocatorError(f"not a PostgreSQL locator: {shown!r}")
        if parts.fragment:
            raise LocatorError(f"PostgreSQL locator {shown!r} must not have a #fragment")
        path = unquote(parts.path)
        if path.count("/") > 1:
            raise LocatorError(f"PostgreSQL locator {shown!r}: database path has extra '/'")
        values: dict[str, Any] = {
            "host": unquote(parts.hostname) if parts.hostname else None,
            "port": port,
            "user": unquote(parts.username) if parts.username else None,
            "dbname": path.lstrip("/") or None,
            "password": password,
        }
        libpq: dict[str, str] = {}
        try:
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise LocatorError(f"PostgreSQL locator {shown!r} has a malformed query") from None
        for key, value in query:
            if key == "password":
                remember_secret(value)
                values["password"] = value
            elif key in ("schema", "artifact_root"):
                values[key] = value or None
            elif key in ("pool_size", "inline_limit"):
                # int() would also take ' 5', '+5', '1_0' and non-ASCII digits.
                number = int(value) if _ASCII_NUMBER.fullmatch(value) else -1
                if number < (1 if key == "pool_size" else 0):
                    raise LocatorError(f"PostgreSQL locator {shown!r}: bad {key}={value!r}")
                values[key] = number
            elif key in ("host", "user", "dbname"):
                values[key] = value or None
            elif key == "port":
                if not _ASCII_NUMBER.fullmatch(value):  # str.isdigit() admits '٥٤٣٢'
                    raise LocatorError(
                        f"PostgreSQL locator {shown!r}: bad port={value!r}; expected ASCII "
                        f"digits 0-9"
                    )
                values["port"] = int(value)
            elif key in _LIBPQ_PARAMS:
                libpq[key] = value
            else:
                known = ", ".join(_METALAB_PARAMS + _LIBPQ_PARAMS)
                raise LocatorError(
                    f"PostgreSQL locator {shown!r}: unknown parameter {key!r} (known: {known})"
                )
        if values.get("schema") is None:
            values.pop("schema", None)
        if values["password"] is None:
            # In a worker: the driver's password for this login, handed over out of band.
            values["password"] = handed_over_password(
                values["host"], values["port"], values["dbname"], values["user"]
            )
        try:
            return cls(libpq=tuple(sorted(libpq.items())), **values)
        except LocatorError as exc:
            raise LocatorError(f"PostgreSQL locator {shown!r}: {exc}") from None

    def locator(self) -> str:
        """The canonical locator (``postgresql://``), never including the password."""
        netloc = ""
        if self.user:
            netloc = quote(self.user, safe="") + "@"
        host = self.host or ""
        host_in_query = host.startswith("/")  # a Unix socket directory cannot be a netloc
        if host and not host_in_query:
            netloc += f"[{host}]" if ":" in host else quote(host, safe=".-_~")
        if self.port is not None and not host_in_query:
            netloc += f":{self.port}"
        query: list[tuple[str, str]] = []
        if host_in_query:
            query.append(("host", host))
            if self.port is not None:
                query.append(("port", str(self.port)))
        if self.schema != DEFAULT_SCHEMA:
            query.append(("schema", self.schema))
        if self.artifact_root:
            query.append(("artifact_root", self.artifact_root))
        if self.pool_size != 4:
            query.append(("pool_size", str(self.pool_size)))
        if self.inline_limit != 1024 * 1024:
            query.append(("inline_limit", str(self.inline_limit)))
        query.extend(self.libpq)
        text = f"postgresql://{netloc}/{quote(self.dbname or '', safe='')}"
        if query:
            text += "?" + urlencode(query, safe="/")
        return text

    def port_answers(self) -> bool:
        """Whether the server's port accepts connections (up, if perhaps too busy to log
        in): the probe :func:`~metalab.store.pg_backoff.connect_with_backoff` is given."""
        from metalab.store.pg_backoff import port_answers

        return port_answers(self.host, self.port)

    def conninfo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.conninfo.make_conninfo`` (password included)."""
        kwargs: dict[str, Any] = dict(self.libpq)
        for key in ("host", "port", "user", "dbname", "password"):
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = value
        # Fail over quickly when the server is down instead of libpq's unbounded default.
        kwargs.setdefault("connect_timeout", "5")
        kwargs.setdefault("application_name", "metalab")
        return kwargs
