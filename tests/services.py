"""Helpers for test fixtures that need the local services (not a test module).

The services are started by ``scripts/postgres-local.sh`` and ``scripts/slurm-local-cluster.sh``
(``.ci/run`` does both). When a service is missing, the requesting test is skipped, unless
``METALAB_REQUIRE_SERVICES=1`` is set (as in CI): then it fails, so that a broken service can
never turn into a green run of skipped tests.

Environment:
    METALAB_TEST_POSTGRES_URL  e.g. postgresql://metalab@127.0.0.1:5432/metalab; the password
                               is not in the URL, libpq/psycopg read it from ~/.pgpass.
    METALAB_REQUIRE_SERVICES   "1" turns "service unavailable" skips into failures.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import urllib.parse
from typing import NoReturn

import pytest

POSTGRES_ENV = "METALAB_TEST_POSTGRES_URL"
REQUIRE_ENV = "METALAB_REQUIRE_SERVICES"
_TIMEOUT_S = 5.0


def services_required() -> bool:
    """True when a missing service must fail the test instead of skipping it."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(message: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{message} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(message)


@functools.cache
def _postgres_problem(url: str) -> str | None:
    """None if ``url`` accepts a connection, else a description of what went wrong."""
    try:
        import psycopg
    except ImportError:
        return _pg_isready_problem(url)
    try:
        with psycopg.connect(url, connect_timeout=int(_TIMEOUT_S)) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"cannot connect to {url}: {type(exc).__name__}: {exc}".strip()
    return None


def _pg_isready_problem(url: str) -> str | None:
    pg_isready = shutil.which("pg_isready")
    if pg_isready is None:
        return "neither psycopg nor pg_isready is available to check PostgreSQL"
    parts = urllib.parse.urlsplit(url)
    cmd = [pg_isready, "-q", "-t", str(int(_TIMEOUT_S)), "-h", parts.hostname or "127.0.0.1"]
    cmd += ["-p", str(parts.port or 5432)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S + 2, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pg_isready failed: {exc}"
    if done.returncode != 0:
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432} is not ready"
    return None


def postgres_url() -> str:
    """The test server's URL; skips (or fails, in CI) the test if it is unset or unreachable.

    The reachability check runs once per session; a test that stops the server on purpose
    is not affected by it afterwards.
    """
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        _unavailable(f"{POSTGRES_ENV} is not set (run scripts/postgres-local.sh)")
    problem = _postgres_problem(url)
    if problem is not None:
        _unavailable(f"PostgreSQL unavailable: {problem}")
    return url


@functools.cache
def _slurm_problem() -> str | None:
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return "sinfo not found (run scripts/slurm-local-cluster.sh)"
    try:
        done = subprocess.run(
            [sinfo, "-h", "-o", "%t"],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer: {exc}"
    if done.returncode != 0:
        return f"sinfo failed: {done.stderr.strip() or done.returncode}"
    states = {s.strip().rstrip("*~#!%$@^-+") for s in done.stdout.split()}
    # "comp": a job on the node is completing (epilog, KillWait); the node takes work again
    # in seconds, so a test starting at that moment must not fail as "no cluster".
    if states & {"idle", "mix", "alloc", "comp"}:
        return None
    return f"no usable SLURM node (sinfo states: {sorted(states) or 'none'})"


def require_slurm() -> None:
    """Skip (or fail, in CI) unless a SLURM node is idle, mixed, allocated or completing."""
    problem = _slurm_problem()
    if problem is not None:
        _unavailable(f"SLURM unavailable: {problem}")
