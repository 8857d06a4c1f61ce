"""Fixtures of the SLURM tests: a real cluster (``services.require_slurm``) and helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalab.executors.slurm_limits import SiteLimits, discover

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from services import require_slurm, services_required


@pytest.fixture(autouse=True)
def _no_cluster_for_unit_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Tests neither marked ``slurm`` nor using a cluster fixture run as without a cluster.

    Submission asks the cluster for its limits (``slurm_limits.discover``); a test that
    plans without a cluster must not depend on whichever cluster this machine runs, so its
    SLURM clients get a config file that does not exist (they fail, no limits are known).
    """
    cluster = {"slurm", "site"} & set(request.fixturenames)
    if request.node.get_closest_marker("slurm") is not None or cluster:
        yield
        return
    # Discovery is cached per SLURM_CONF: this answer never reaches the cluster tests.
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/metalab-unit-tests/slurm.conf")
    yield


@pytest.fixture
def slurm() -> None:
    """Skip (or fail, with METALAB_REQUIRE_SERVICES=1) unless a SLURM node is usable."""
    require_slurm()


@pytest.fixture
def no_leftover_jobs() -> Iterator[list[str]]:
    """Job ids a test submitted; whatever is still queued at the end is scancel-ed."""
    jobs: list[str] = []
    yield jobs
    if jobs:
        subprocess.run(["scancel", *jobs], check=False, capture_output=True)


def worker_env() -> dict[str, str]:
    """Environment for subprocesses running metalab from this checkout's venv."""
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)
    return env


@pytest.fixture
def site() -> SiteLimits:
    """The limits of a site-profile cluster (``slurm-local-cluster.sh --profile site``).

    Skips (or fails, with METALAB_REQUIRE_SERVICES=1, as in CI, which runs the site
    profile) on a cluster without accounting or without a finite ``MaxArraySize``.
    """
    require_slurm()
    limits = discover(refresh=True)
    if not limits.accounting or limits.max_array_size is None or limits.submit_limit is None:
        message = (
            "SLURM cluster is not the site profile (accounting, MaxArraySize and a QOS "
            "submit limit): run scripts/slurm-local-cluster.sh --profile site and export "
            "the SLURM_CONF it prints"
        )
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return limits
