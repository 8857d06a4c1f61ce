"""A requeued array task runs again by itself and executes only what is not done.

``scontrol requeue`` of a running task is what preemption with ``PreemptMode=REQUEUE``
does to it (SIGTERM, back to pending with the same array index, ``SLURM_RESTART_COUNT``
one higher). One array task holds six runs; it is requeued once two runs are done and
the third is mid-way. Side files count every start and every completion of each run.

The requeued task is released from its ~120 s BeginTime by
:func:`cluster_tools.release_requeued`, which waits out the second of the kill: a task
released within it is refused by slurmd ("Job credential revoked") and ends FAILED, which
is why this test used to miss its deadline on the CI cluster.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_tools import job_report, release_requeued, requeue

import metalab
from metalab.records import RunState
from metalab.store.file import FileStore

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

RUNS = 6
INTERRUPTED = 2
"""The run that is mid-way when the task is requeued (runs 0 and 1 are done then)."""


def counted_op(context: Any, params: Any, capture: Any) -> None:
    """Note each start (with the task's restart count) and each completion of the run."""
    root = Path(context["dir"])
    x = params["x"]
    start = root / f"start-{x}"
    first = not start.exists()
    with open(start, "a") as fh:
        fh.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
    # The first attempt of the interrupted run is long, so the requeue surely lands
    # inside it on a loaded machine; every other execution takes about a second.
    time.sleep(30.0 if x == INTERRUPTED and first else 1.0)
    with open(root / f"done-{x}", "a") as fh:
        fh.write("done\n")
    capture.metric("y", x)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_requeued_task_executes_only_runs_not_done(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    exp = metalab.Experiment(
        name="requeued",
        version="1",
        context={"dir": str(tmp_path)},
        operation=counted_op,
        params=metalab.grid(x=list(range(RUNS))),
        seeds=metalab.seeds(base=3, replicates=1),
    )
    store = tmp_path / "store"
    config = metalab.SlurmConfig(runs_per_task=RUNS, time="5", memory="500M")
    handle = metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    (job,) = handle.job_ids
    task = f"{job}_0"
    deadline = time.monotonic() + 90
    while not _lines(tmp_path / f"start-{INTERRUPTED}"):
        assert time.monotonic() < deadline, f"the task never reached run 2: {job_report(task)}"
        time.sleep(0.1)
    done_before = [x for x in range(RUNS) if _lines(tmp_path / f"done-{x}")]
    assert done_before == list(range(INTERRUPTED)), done_before
    began = time.monotonic()

    # What the store and handle.status say while the task is requeued: the interrupted
    # run must say "preempted", and no run may ever be called crashed (the launch must
    # not take the requeued task for a dead one).
    seen: set[tuple[str, str | None]] = set()
    reasons: set[str] = set()

    def look() -> None:
        for record in FileStore(store).load_records(run_ids=handle.run_ids).records:
            if record.status is not RunState.SUCCESS:
                seen.add((record.run_id, record.reason.value if record.reason else None))
        reasons.update(handle.status.reasons)

    def restarted() -> bool:
        look()
        return len(_lines(tmp_path / f"start-{INTERRUPTED}")) > 1

    release_requeued(task, killed_at=requeue(task), started=restarted)
    deadline = time.monotonic() + 90
    while not handle.is_complete:
        assert time.monotonic() < deadline, f"the requeued task did not finish: {job_report(task)}"
        look()
        time.sleep(0.3)
    results = handle.result(timeout=30)
    took = time.monotonic() - began

    assert len(results) == RUNS
    assert [r.record.status for r in results] == [RunState.SUCCESS] * RUNS
    assert sorted(r.metrics["y"] for r in results) == list(range(RUNS))
    # Every run completed exactly once; only the interrupted one started twice, and its
    # second start is the same array task restarted by SLURM (restart count 1).
    assert [len(_lines(tmp_path / f"done-{x}")) for x in range(RUNS)] == [1] * RUNS
    starts = [_lines(tmp_path / f"start-{x}") for x in range(RUNS)]
    assert starts == [["0"], ["0"], ["0", "1"], ["1"], ["1"], ["1"]], starts
    status = handle.status
    assert (status.total, status.completed, status.failed, status.pending, status.running) == (
        RUNS,
        RUNS,
        0,
        0,
        0,
    )
    assert (status.cancelled, status.reasons) == (0, {})
    # The worker told the requeue from a cancellation, and only the interrupted run
    # ever stood unfinished in the store.
    interrupted = handle.run_ids[INTERRUPTED]
    assert seen == {(interrupted, "preempted")}, seen
    assert reasons == {"preempted"}, reasons
    print(f"requeue to completion: {took:.1f} s")  # shown with -s / on failure
