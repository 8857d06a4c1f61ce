"""A SLURM sweep in progress, watched through the dashboard: its counts climb.

The sweep runs as a real job array on the local cluster (skipped without one, failed
under METALAB_REQUIRE_SERVICES=1); the dashboard reads the store the array tasks write.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import Server

import metalab
from services import require_slurm

pytestmark = pytest.mark.slurm

RUNS = 12


def nap(params: Any, capture: Any) -> None:
    """One run of the sweep: half a second of work, one metric."""
    time.sleep(0.5)
    capture.metric("twice", params["k"] * 2)


def test_counts_climb_while_a_slurm_array_writes_the_store(tmp_path: Path) -> None:
    require_slurm()
    exp = metalab.Experiment(
        name="slurm_live",
        version="1",
        context={},
        operation=nap,
        params=metalab.grid(k=list(range(RUNS))),
        seeds=metalab.seeds(base=3, replicates=1),
    )
    store = tmp_path / "store"
    config = metalab.SlurmConfig(runs_per_task=2, max_concurrent=2, time="5")
    handle = metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    seen: list[int] = []
    matched: list[int] = []
    try:
        with Server(store, refresh_s=0.3) as server:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                [e] = server.json("/api/experiments")["experiments"]
                seen.append(e["counts"]["success"])
                matched.append(server.json("/api/runs", experiment="slurm_live:1")["matched"])
                if seen[-1] == RUNS and matched[-1] == RUNS:
                    break
                time.sleep(0.25)
    finally:
        handle.result(timeout=300)
    assert seen == sorted(seen), seen
    assert seen[-1] == RUNS and matched[-1] == RUNS, (seen[-3:], matched[-3:])
    assert len({c for c in seen if 0 < c < RUNS}) >= 2, seen  # watched mid-sweep
    assert len({m for m in matched if 0 < m < RUNS}) >= 1, matched
