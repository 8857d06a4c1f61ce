"""Benchmark: plan and submit a 300,000-run experiment to SLURM without waiting.

Everything submitted is scancel-ed right away (on a site-profile cluster only the first
wave is queued). Execution to completion, against a ``/bin/true`` floor, is
``benches/bench_large_sweep.py``. Prints a table of timings::

    uv run python benches/bench_slurm.py            # 300,000 runs
    uv run python benches/bench_slurm.py --quick    # 30,000 runs
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import metalab
from metalab.executors.slurm import SlurmLaunch
from metalab.plan import RunPlan


def bench_operation(params: Any, seeds: Any, capture: Any) -> None:
    """A trivial run (only the worker's start-up cost matters here)."""
    capture.metric("v", params["gene"] * params["expr_val"])


def _timed(rows: list[tuple[str, float]], label: str, fn: Any) -> Any:
    start = time.perf_counter()
    value = fn()
    rows.append((label, time.perf_counter() - start))
    return value


def main(quick: bool = False) -> list[tuple[str, float]]:
    """Run the benchmark, print the table and return its rows ``(step, seconds)``."""
    genes = 200 if quick else 2000
    exp = metalab.Experiment(
        name="large_sweep",
        version="0.1",
        context={},
        operation=bench_operation,
        params=metalab.grid(gene=list(range(genes)), expr_val=list(range(50))),
        seeds=metalab.seeds(base=42, replicates=3),
    )
    rows: list[tuple[str, float]] = []
    root = Path(tempfile.mkdtemp(prefix="metalab-bench-slurm-"))
    store = root / "store"
    executor = metalab.SlurmExecutor(
        # 10 runs per array task: 30,000 array tasks. With one run per task the local
        # cluster's MaxJobCount (200,000, which counts queued array tasks) is exceeded.
        metalab.SlurmConfig(
            time="1:00:00", max_array_size=10000, max_concurrent=500, runs_per_task=10
        )
    )
    launch: SlurmLaunch | None = None
    try:
        plan = _timed(rows, "plan: RunPlan + all run IDs", lambda: RunPlan(exp).run_ids)
        del plan
        _timed(rows, "dry run (plan, resume scan, describe)", lambda: _quiet_dry_run(exp, store))
        handle = _timed(
            rows,
            "metalab.run: plan + scan + submit",
            lambda: metalab.run(exp, store=str(store), executor=executor),
        )
        launch = handle._launch
        assert isinstance(launch, SlurmLaunch)
        _timed(rows, "scancel everything", launch.cancel)
        worker = [
            sys.executable,
            "-m",
            "metalab.worker",
            "--store",
            str(store),
            "--experiment",
            exp.experiment_id,
            "--offset",
            "0",
            "--runs-per-task",
            "1",
            "--array-task",
            str(exp.total_runs - 1),
        ]
        _timed(
            rows,
            "one worker process (start, rebuild plan, 1 run)",
            lambda: subprocess.run(worker, check=True),
        )
    finally:
        if launch is not None and launch.job_ids:
            subprocess.run(["scancel", *launch.job_ids], check=False)
        shutil.rmtree(root, ignore_errors=True)
    n_arrays = len(launch.job_ids) if launch is not None else 0
    print(f"\nSLURM submission of {exp.total_runs:,} runs, 10 per array task ({n_arrays} arrays)")
    print(f"{'step':<50} {'seconds':>9}")
    for label, seconds in rows:
        print(f"{label:<50} {seconds:>9.3f}")
    return rows


def _quiet_dry_run(exp: metalab.Experiment, store: Path) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        metalab.run(
            exp,
            store=str(store),
            dry_run=True,
            executor=metalab.SlurmExecutor(metalab.SlurmConfig(max_concurrent=500)),
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="30,000 runs instead of 300,000")
    main(quick=parser.parse_args().quick)
