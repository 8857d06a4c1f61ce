"""A throw-away PostgreSQL role with a password, for credential tests (not a test module).

The test server's own role (``metalab``) logs in through ``~/.pgpass``; these tests need a
login whose password exists *only* in the locator. The role is created and dropped as the
server's superuser through ``runuser -u postgres -- psql`` over the local socket (peer
authentication, as ``scripts/postgres-local.sh`` does), which needs root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services import postgres_url, services_required


@dataclass(frozen=True)
class PasswordRole:
    """A role, its password and a locator that carries it."""

    name: str
    password: str = field(repr=False)
    url: str = field(repr=False)
    """``postgresql://name:password@host:port/db?schema=...`` (password percent-encoded)."""
    schema: str

    @property
    def secrets(self) -> list[str]:
        """Every spelling of the password that must never show up anywhere."""
        return [self.password, urllib.parse.quote(self.password, safe="")]


def _psql(port: int, database: str, script: str) -> None:
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run(
        [*argv, "-p", str(port), "-d", database],
        input=script,  # on stdin: the password never shows up in a process listing
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def isolate_from_pgpass(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point libpq at an empty password file and clear every other password source."""
    path = directory / "empty.pgpass"
    path.write_text("")
    path.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(path))
    for name in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)
    return path


@contextmanager
def password_role(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PasswordRole]:
    """Create a LOGIN role with a password only its locator knows; drop it afterwards.

    libpq is first pointed at an empty password file (:func:`isolate_from_pgpass`, in
    ``directory``), so that no pgpass entry or environment variable can supply it.
    """
    base = urllib.parse.urlsplit(postgres_url())
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        message = "creating a PostgreSQL role needs root and runuser"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    isolate_from_pgpass(directory, monkeypatch)
    port = base.port or 5432
    database = base.path.lstrip("/") or "postgres"
    name = f"cred_{secrets.token_hex(6)}"
    # ':' and '\\' exercise the password file's escaping, '@', ' ' and 'é' the URL's.
    password = f"pw:{secrets.token_hex(8)}@ \\é"
    _psql(
        port,
        database,
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\n"
        f"GRANT CONNECT, CREATE ON DATABASE {database} TO {name};\n",
    )
    schema = f"s_{secrets.token_hex(6)}"
    netloc = f"{name}:{urllib.parse.quote(password, safe='')}@{base.hostname}:{port}"
    url = f"postgresql://{netloc}/{database}?schema={schema}"
    try:
        yield PasswordRole(name, password, url, schema)
    finally:
        # DROP OWNED removes the role's schema (and its tables) and its grants.
        _psql(port, database, f"DROP OWNED BY {name} CASCADE;\nDROP ROLE {name};\n")
