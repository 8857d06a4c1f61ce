"""Fixtures for PostgreSQL tests: every test gets its own schema, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import postgres_url


@pytest.fixture
def pg_url() -> str:
    """The test server's base URL (skips or fails when PostgreSQL is unavailable)."""
    return postgres_url()


@pytest.fixture
def pg_locator(pg_url: str, tmp_path: Path) -> Iterator[str]:
    """A locator with a fresh ``t_<uuid>`` schema and an artifact root; schema dropped after."""
    from metalab.store.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex}"
    sep = "&" if "?" in pg_url else "?"
    locator = f"{pg_url}{sep}schema={schema}&artifact_root={tmp_path / 'pg_artifacts'}"
    yield locator
    store = PostgresStore.from_locator(locator)
    try:
        store.drop_schema()
    finally:
        store.close()
