"""The SLURM executor against a real cluster (``scripts/slurm-local-cluster.sh``).

Throughput of the local cluster is about 4 array tasks a second, so every test packs
several runs per array task and stays at a handful of tasks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.executors.slurm import SlurmLaunch

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def record_op(context: Any, params: Any, seeds: Any, capture: Any, runtime: Any) -> None:
    """Sleep a little, note the execution in the context dir, fail or stall on request."""
    root = Path(context["dir"])
    x = params["x"]
    with open(root / f"exec-{x}", "a") as fh:
        fh.write(f"{runtime.worker_id}\n")
    start = time.time()
    if x == context.get("fail_at"):
        raise ValueError(f"bad x {x}")
    if x == context.get("stall_at") and (root / "stall").exists():
        time.sleep(60)
    time.sleep(context.get("sleep", 0.0))
    capture.metric("y", x * 2)
    capture.metric("start", start)
    capture.metric("end", time.time())


def _exp(name: str, tmp: Path, n: int, replicates: int = 1, **ctx: Any) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={"dir": str(tmp), **ctx},
        operation=record_op,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=7, replicates=replicates),
    )


def _executions(tmp: Path, x: int) -> int:
    path = tmp / f"exec-{x}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_acceptance_24_runs_two_shards_reconnect_from_fresh_process(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    exp = _exp("accept", tmp_path, 8, replicates=3, sleep=0.3)
    store = tmp_path / "store"
    handle = metalab.run(
        exp,
        store=str(store),
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(max_array_size=4, max_concurrent=4, runs_per_task=3, time="5")
        ),
    )
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    no_leftover_jobs.extend(launch.job_ids)
    assert len(launch.job_ids) == 2  # 24 runs / 3 per task = 8 tasks, 4 per array
    assert not (store / "blobs" / f"slurm-{launch.submission}-tasks").exists()  # identity
    script = textwrap.dedent(f"""
        import json, metalab
        handle = metalab.reconnect({str(store)!r}, progress=True)
        results = handle.result(timeout=120)
        print(json.dumps([[r.status.value, r.metrics["y"], r.metrics["start"], r.metrics["end"]]
                          for r in results]))
        print(handle.status)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=True
    )
    lines = done.stdout.strip().splitlines()
    rows = json.loads(lines[-2])
    assert len(rows) == 24 and all(row[0] == "success" for row in rows)
    assert "completed=24" in lines[-1] and "failed=0" in lines[-1]
    # max_concurrent=4 holds across both arrays.
    events = sorted([(r[2], 1) for r in rows] + [(r[3], -1) for r in rows])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    # A task runs its 3 runs one after another: overlapping runs = tasks running at once.
    assert 1 < peak <= 4
    assert handle.result(timeout=30).table() is not None
    assert len(handle.result()) == 24


def test_scancel_mid_block_then_resume_runs_only_missing(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    (tmp_path / "stall").touch()
    exp = _exp("killed", tmp_path, 6, stall_at=4)
    store = str(tmp_path / "store")
    executor = metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=3, time="5"))
    handle = metalab.run(exp, store=store, executor=executor)
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    no_leftover_jobs.extend(launch.job_ids)
    deadline = time.monotonic() + 60
    while _executions(tmp_path, 4) == 0:  # task 1 (runs 3, 4, 5) is stuck in run 4
        assert time.monotonic() < deadline, "array task 1 never reached run 4"
        time.sleep(0.2)
    subprocess.run(["scancel", f"{launch.job_ids[0]}_1"], check=True)
    results = handle.result(timeout=60)
    status = handle.status
    assert (status.completed, status.failed, status.pending, status.running) == (4, 2, 0, 0)
    by_x = {r.params["x"]: r for r in results}
    assert by_x[3].status.value == "success"
    assert by_x[4].status.value in ("cancelled", "failed")  # SIGTERM while running
    assert by_x[5].status.value == "failed"
    assert by_x[5].error is not None and by_x[5].error.type == "WorkerCrashedError"

    (tmp_path / "stall").unlink()
    again = metalab.run(exp, store=store, resume=True, executor=executor)
    relaunch = again._launch
    assert isinstance(relaunch, SlurmLaunch)
    no_leftover_jobs.extend(relaunch.job_ids)
    assert relaunch.n_todo == 2 and relaunch.reconnect_info["tasks_key"] is not None
    results = again.result(timeout=60)
    assert all(r.status.value == "success" for r in results) and len(results) == 6
    assert [_executions(tmp_path, x) for x in range(6)] == [1, 1, 1, 1, 2, 1]

    # Nothing missing: nothing is submitted.
    third = metalab.run(exp, store=store, resume=True, executor=executor)
    assert isinstance(third._launch, SlurmLaunch) and third._launch.job_ids == []
    assert third.status.completed == 6 and third.status.skipped == 6
    assert len(third.result(timeout=10)) == 6


def test_failed_run_is_visible_as_failed(tmp_path: Path, no_leftover_jobs: list[str]) -> None:
    exp = _exp("failing", tmp_path, 3, fail_at=1)
    handle = metalab.run(
        exp,
        store=str(tmp_path / "store"),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=3, time="5")),
    )
    assert isinstance(handle._launch, SlurmLaunch)
    no_leftover_jobs.extend(handle._launch.job_ids)
    results = handle.result(timeout=60)
    status = handle.status
    assert (status.completed, status.failed) == (2, 1)
    failed = [r for r in results if r.status.value == "failed"]
    assert len(failed) == 1 and failed[0].error is not None
    assert failed[0].error.type == "ValueError" and "bad x 1" in failed[0].error.message


def test_hostile_store_path_runs(tmp_path: Path, no_leftover_jobs: list[str]) -> None:
    hostile = tmp_path / "we ird'\"$(touch pwned);`touch pwned2` & x%A"
    exp = _exp("hostile", tmp_path, 2)
    handle = metalab.run(
        exp,
        store=str(hostile),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5")),
    )
    assert isinstance(handle._launch, SlurmLaunch)
    no_leftover_jobs.extend(handle._launch.job_ids)
    results = handle.result(timeout=60)
    assert [r.status.value for r in results] == ["success", "success"]
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    logs = list((hostile / "slurm" / "logs").rglob("*.out"))
    assert len(logs) == 1  # sbatch wrote the log at the literal (escaped) path


def test_operation_defined_in_script_main(tmp_path: Path, no_leftover_jobs: list[str]) -> None:
    script = tmp_path / "submit.py"
    script.write_text(
        textwrap.dedent(f"""
        import metalab

        def local_op(params, seeds, capture):
            capture.metric("sq", params["x"] ** 2)

        if __name__ == "__main__":
            exp = metalab.Experiment(
                name="from_main", version="1", context={{}}, operation=local_op,
                params=metalab.grid(x=[1, 2, 3, 4]), seeds=metalab.seeds(base=1),
            )
            handle = metalab.run(
                exp, store={str(tmp_path / "store")!r},
                executor=metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5")),
            )
            print(sorted(r.metrics["sq"] for r in handle.result(timeout=60)))
    """)
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[1, 4, 9, 16]"


def test_cancel_scancels_and_counts_cancelled(tmp_path: Path, no_leftover_jobs: list[str]) -> None:
    exp = _exp("cancelled", tmp_path, 4, sleep=20)
    handle = metalab.run(
        exp,
        store=str(tmp_path / "store"),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5")),
    )
    assert isinstance(handle._launch, SlurmLaunch)
    no_leftover_jobs.extend(handle._launch.job_ids)
    handle.cancel()
    handle.result(timeout=60)
    status = handle.status
    assert status.completed == 0 and status.running == 0 and status.pending == 0
    assert status.cancelled + status.failed == 4
