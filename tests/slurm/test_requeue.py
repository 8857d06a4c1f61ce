"""A requeued (or preempted) array task runs again and executes only what is not done.

``scontrol requeue`` of a running task is what preemption with ``PreemptMode=REQUEUE``
does to it (SIGTERM, back to pending with the same array index, ``SLURM_RESTART_COUNT``
one higher); side files count every start and every completion of each run.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.records import FailureReason, RunState
from metalab.runner import run
from metalab.store.file import FileStore

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def counted_op(context: Any, params: Any, capture: Any) -> None:
    """Note each start and each completion of the run in side files."""
    root = Path(context["dir"])
    x = params["x"]
    with open(root / f"start-{x}", "a") as fh:
        fh.write("start\n")
    time.sleep(4.0 if x == 1 else 0.5)
    with open(root / f"done-{x}", "a") as fh:
        fh.write("done\n")
    capture.metric("y", x)


def _count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _release_now(task: str) -> None:
    """Skip the requeued task's ~2 minute BeginTime delay (the behaviour is the same)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", task, "-o", "%T %r"], capture_output=True, text=True
        ).stdout
        if "PENDING" in state:
            subprocess.run(["scontrol", "update", f"jobid={task}", "StartTime=now"], check=True)
            return
        time.sleep(0.2)
    raise AssertionError(f"{task} did not return to the queue after the requeue")


def _nudge(task: str) -> None:
    """Ask again that a still-pending requeued task start now.

    An update that lands while the controller is still processing the requeue is
    overwritten by the requeue's own BeginTime (seen here: about 1 run in 6).
    """
    state = subprocess.run(
        ["squeue", "-h", "-j", task, "-o", "%T"], capture_output=True, text=True
    ).stdout
    if state.startswith("PENDING"):
        subprocess.run(["scontrol", "update", f"jobid={task}", "StartTime=now"], check=False)


def test_requeued_task_executes_only_runs_not_done(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    exp = metalab.Experiment(
        name="requeued",
        version="1",
        context={"dir": str(tmp_path)},
        operation=counted_op,
        params=metalab.grid(x=list(range(6))),
        seeds=metalab.seeds(base=3, replicates=1),
    )
    store = tmp_path / "store"
    config = metalab.SlurmConfig(runs_per_task=3, time="5", memory="500M")
    handle = run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    deadline = time.monotonic() + 60
    while _count(tmp_path / "start-1") == 0:  # task 0 finished x=0, is inside x=1
        assert time.monotonic() < deadline, "array task 0 never reached its second run"
        time.sleep(0.1)
    task = f"{handle.job_ids[0]}_0"
    subprocess.run(["scontrol", "requeue", task], check=True)
    _release_now(task)
    interrupted = handle.run_ids[1]
    seen: set[tuple[Any, Any]] = set()
    deadline = time.monotonic() + 180
    nudged = time.monotonic()
    while not handle.is_complete:
        assert time.monotonic() < deadline, "the requeued task did not finish"
        record = FileStore(store).get_record(interrupted)
        if record is not None:
            seen.add((record.status, record.reason))
        if time.monotonic() - nudged > 2.0:
            _nudge(task)
            nudged = time.monotonic()
        time.sleep(0.3)
    results = handle.result(timeout=30)
    assert [r.record.status for r in results] == [RunState.SUCCESS] * 6
    # Every run completed exactly once; only the interrupted one started twice.
    assert [_count(tmp_path / f"done-{x}") for x in range(6)] == [1] * 6
    assert [_count(tmp_path / f"start-{x}") for x in range(6)] == [1, 2, 1, 1, 1, 1]
    status = handle.status
    assert (status.completed, status.failed, status.pending, status.running) == (6, 0, 0, 0)
    # The worker told the requeue from a cancellation: the interrupted attempt said so
    # (its record stood until the second attempt finished the run).
    assert (RunState.CANCELLED, FailureReason.PREEMPTED) in seen, seen
