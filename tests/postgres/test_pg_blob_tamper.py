"""A second PostgreSQL role that may only UPDATE ``blobs`` cannot run code as the victim.

The attack of issue 11 (2), performed for real: a role with ``USAGE`` on the schema and
``SELECT, UPDATE`` on ``blobs`` (nothing else) connects as itself and replaces the spec or
the SLURM derived-metric blob with one whose unpickling creates a marker file. Rows have
no owner to check, so only the seal stops it: ``reconnect`` (directly, and through a
FallbackStore) and the SLURM worker command must raise/report ``SignatureError``, and the
marker must never appear.
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import metalab
from metalab.errors import SignatureError
from metalab.runner import spec_key
from metalab.signing import KEY_FILE_ENV, seal
from metalab.store.fallback import FallbackStore
from metalab.store.postgres import PostgresStore
from payload_attacks import Touch, evil_spec, experiment, run_worker, write_submission, y_plus_one
from services import services_required


@pytest.fixture(autouse=True)
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The victim's signing key, private to the test (workers inherit the variable)."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv(KEY_FILE_ENV, str(directory / "signing.key"))
    return directory / "signing.key"


def _superuser_sql(port: int, database: str, sql: str) -> None:
    """Run SQL as the server's superuser (peer login as ``postgres``, like postgres-local.sh)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or shutil.which("psql") is None:
        message = "creating a second PostgreSQL role needs root, runuser and psql"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    command = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    command += ["-p", str(port), "-d", database, "-c", sql]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@dataclass
class Attacker:
    """A second role that can read and update the blobs of the victim's schema, no more."""

    conninfo: dict[str, object]
    schema: str

    def replace_blob(self, key: str, forge: object) -> None:
        """SELECT the blob, UPDATE it with ``forge(old_bytes)``, as the attacker's role."""
        assert callable(forge)
        with psycopg.connect(**self.conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
            row = conn.execute(
                f"SELECT data FROM {self.schema}.blobs WHERE key = %s", (key,)
            ).fetchone()
            assert row is not None, f"no blob {key}"
            updated = conn.execute(
                f"UPDATE {self.schema}.blobs SET data = %s WHERE key = %s",
                (forge(bytes(row[0])), key),
            )
            assert updated.rowcount == 1
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"DELETE FROM {self.schema}.records")  # only blobs are theirs


@pytest.fixture
def attacker(pg_url: str, pg_locator: str) -> Iterator[Attacker]:
    """Create the role and its grants on the test's schema; drop both afterwards."""
    parts = urllib.parse.urlsplit(pg_url)
    schema = urllib.parse.parse_qs(urllib.parse.urlsplit(pg_locator).query)["schema"][0]
    database = parts.path.lstrip("/")
    port = parts.port or 5432
    role, password = f"metalab_attacker_{secrets.token_hex(4)}", secrets.token_hex(16)
    _superuser_sql(port, "postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        store = PostgresStore.from_locator(pg_locator)
        store.blob_keys()  # the first query creates the schema, owned by the victim
        store.close()
        with psycopg.connect(pg_url, autocommit=True) as owner:
            owner.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            owner.execute(f"GRANT SELECT, UPDATE ON {schema}.blobs TO {role}")
        conninfo = {
            "host": parts.hostname,
            "port": port,
            "dbname": database,
            "user": role,
            "password": password,
        }
        yield Attacker(conninfo, schema)
    finally:
        _superuser_sql(port, database, f"DROP OWNED BY {role}; DROP ROLE {role}")


def _forged_spec(marker: Path, how: str, tmp_path: Path) -> object:
    def forge(old: bytes) -> bytes:
        evil = evil_spec(old, marker)
        if how == "unsigned":
            return evil
        # Sealed with the attacker's own key: well-formed, but not the victim's.
        previous = os.environ[KEY_FILE_ENV]
        os.environ[KEY_FILE_ENV] = str(tmp_path / "attacker.key")
        try:
            return seal(evil, "spec:tamper:1")
        finally:
            os.environ[KEY_FILE_ENV] = previous

    return forge


@pytest.mark.parametrize("how", ["unsigned", "sealed with the attacker's key"])
def test_reconnect_refuses_a_spec_replaced_by_another_role(
    pg_locator: str, attacker: Attacker, tmp_path: Path, how: str
) -> None:
    metalab.run(experiment(), store=pg_locator).result()
    assert metalab.reconnect(pg_locator).status.completed == 3  # the victim's own spec loads
    marker = tmp_path / "pwned"
    attacker.replace_blob(spec_key("tamper:1"), _forged_spec(marker, how, tmp_path))
    with pytest.raises(SignatureError, match="re-run the launch from the submitting account"):
        metalab.reconnect(pg_locator)
    assert not marker.exists()


def test_reconnect_through_a_fallback_store_refuses_the_replaced_spec(
    pg_locator: str, attacker: Attacker, tmp_path: Path
) -> None:
    store = FallbackStore(pg_locator, tmp_path / "fallback")
    metalab.run(experiment(), store=store).result()
    marker = tmp_path / "pwned"
    attacker.replace_blob(spec_key("tamper:1"), _forged_spec(marker, "unsigned", tmp_path))
    with pytest.raises(SignatureError):
        metalab.reconnect(store)
    assert not marker.exists()
    store.close()


def test_slurm_worker_refuses_a_spec_replaced_by_another_role(
    pg_locator: str, attacker: Attacker, tmp_path: Path
) -> None:
    store = PostgresStore.from_locator(pg_locator)
    try:
        write_submission(store)
        marker = tmp_path / "pwned"
        attacker.replace_blob(spec_key("tamper:1"), _forged_spec(marker, "unsigned", tmp_path))
        done = run_worker(store, None)
        assert done.returncode == 3, done.stderr
        assert "SignatureError" in done.stderr and "nothing was executed" in done.stderr
        assert not marker.exists()
        assert store.load_records().records == []
    finally:
        store.close()


def test_slurm_worker_refuses_a_derived_blob_replaced_by_another_role(
    pg_locator: str, attacker: Attacker, tmp_path: Path
) -> None:
    store = PostgresStore.from_locator(pg_locator)
    try:
        key = write_submission(store, [y_plus_one])
        assert key is not None
        marker = tmp_path / "pwned"
        attacker.replace_blob(key, lambda _old: pickle.dumps([Touch(marker)]))
        done = run_worker(store, key)
        assert done.returncode == 3, done.stderr
        assert f"blob {key!r}" in done.stderr and "SignatureError" in done.stderr
        assert not marker.exists()
        assert store.load_records().records == []
    finally:
        store.close()


def test_slurm_worker_runs_the_victims_own_submission(pg_locator: str) -> None:
    store = PostgresStore.from_locator(pg_locator)
    try:
        key = write_submission(store, [y_plus_one])
        done = run_worker(store, key)
        assert done.returncode == 0, done.stderr
        derived = store.get_derived([r.run_id for r in store.load_records().records])
        assert sorted(values["y1"] for values in derived.values()) == [2, 5, 10]
    finally:
        store.close()
