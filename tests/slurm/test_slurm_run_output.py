"""On SLURM, what a run prints and warns and its traceback are in its own log.

One array task runs both runs (tiny on purpose: the local cluster starts ~4 tasks/s).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.executors.slurm import SlurmLaunch

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def noisy(params: Any) -> None:
    """Print, write to stderr and warn; x=2 then fails."""
    x = params["x"]
    print(f"stdout of run {x}")
    sys.stderr.write(f"stderr of run {x}\n")
    warnings.warn(f"warned by run {x}", UserWarning, stacklevel=1)
    if x == 2:
        raise ValueError(f"run {x} fails")


def test_slurm_runs_keep_their_output_and_traceback(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    store = tmp_path / "store"
    exp = metalab.Experiment("noisy", "1", {}, noisy, metalab.grid(x=[1, 2]), metalab.seeds(0))
    handle = metalab.run(
        exp,
        store=str(store),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5")),
        progress=False,
    )
    assert isinstance(handle._launch, SlurmLaunch)
    no_leftover_jobs.extend(handle._launch.job_ids)
    results = {r.params["x"]: r for r in handle.result(timeout=90)}
    for x, run in results.items():
        other = 3 - x
        job = run.record.provenance.worker_id
        assert f"[stdout] [{job}] stdout of run {x}\n" in run.log
        assert f"[stderr] [{job}] stderr of run {x}\n" in run.log
        assert f"[warning] [{job}] UserWarning: warned by run {x} (" in run.log
        assert f"run {other}" not in run.log
    assert "Traceback (most recent call last):" in results[2].log
    assert "ValueError: run 2 fails" in results[2].log
    assert "Traceback" not in results[1].log
    # The shard log still gets the output, as before.
    (shard,) = (store / "slurm" / "logs").rglob("*.out")
    text = shard.read_text()
    assert "stdout of run 1" in text and "stderr of run 2" in text
