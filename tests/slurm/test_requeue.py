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

import subprocess
import time
from pathlib import Path

import pytest
from cluster_tools import (
    Watch,
    counted_op,
    job_report,
    lines,
    queue_state,
    release_requeued,
    requeue,
    wait_until_gone,
)
from site_cluster import use_site_cluster

import metalab
from metalab.records import FailureReason, RunState

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

RUNS = 6
INTERRUPTED = 2
"""The run that is mid-way when the task is requeued (runs 0 and 1 are done then)."""
_ROUNDS = 6


def test_requeued_task_executes_only_runs_not_done(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    exp = metalab.Experiment(
        name="requeued",
        version="1",
        context={"dir": str(tmp_path), "long": INTERRUPTED},
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
    # What the store, handle.status and the launch say from now on (a user watching).
    watch = Watch(handle, store)
    deadline = time.monotonic() + 90
    while not lines(tmp_path / f"start-{INTERRUPTED}"):
        assert time.monotonic() < deadline, f"the task never reached run 2: {job_report(task)}"
        watch.look()
        time.sleep(0.1)
    done_before = [x for x in range(RUNS) if lines(tmp_path / f"done-{x}")]
    assert done_before == list(range(INTERRUPTED)), done_before
    began = time.monotonic()

    # While the task is requeued, the interrupted run must say "preempted", and no run
    # may ever be called crashed (the launch must not take the requeued task for a dead
    # one).
    def restarted() -> bool:
        watch.look()
        return len(lines(tmp_path / f"start-{INTERRUPTED}")) > 1

    release_requeued(task, killed_at=requeue(task), started=restarted)
    deadline = time.monotonic() + 90
    while not handle.is_complete:
        assert time.monotonic() < deadline, f"the requeued task did not finish: {job_report(task)}"
        watch.look()
        time.sleep(0.3)
    results = handle.result(timeout=30)
    took = time.monotonic() - began

    assert len(results) == RUNS
    assert [r.record.status for r in results] == [RunState.SUCCESS] * RUNS
    assert sorted(r.metrics["y"] for r in results) == list(range(RUNS))
    # Every run completed exactly once; only the interrupted one started twice, and its
    # second start is the same array task restarted by SLURM (restart count 1).
    assert [len(lines(tmp_path / f"done-{x}")) for x in range(RUNS)] == [1] * RUNS
    starts = [lines(tmp_path / f"start-{x}") for x in range(RUNS)]
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
    assert watch.unfinished == {(interrupted, "preempted")}, watch.unfinished
    assert watch.reasons == {"preempted"}, watch.reasons
    print(f"requeue to completion: {took:.1f} s")  # shown with -s / on failure


def test_a_relaunch_slurm_refuses_is_reported_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    """A requeued task released within the second of its kill is refused by slurmd.

    It then ends FAILED for good while its log still ends with the requeue's words; the
    launch believes accounting and records the block's unstarted runs as crashed at once,
    instead of waiting :data:`~metalab.executors.slurm_launch.REQUEUE_GRACE_S` (5 min)
    for a task that will not come back. Whether the relaunch lands in the kill's second
    depends on when the scheduler next runs (about every second here), so the task is
    requeued and released at once up to :data:`_ROUNDS` times until slurmd refuses it.
    """
    use_site_cluster(monkeypatch)  # the verdict comes from accounting
    exp = metalab.Experiment(
        name="refused",
        version="1",
        context={"dir": str(tmp_path), "long": INTERRUPTED, "always": True},
        operation=counted_op,
        params=metalab.grid(x=list(range(RUNS))),
        seeds=metalab.seeds(base=4, replicates=1),
    )
    store = tmp_path / "store"
    config = metalab.SlurmConfig(runs_per_task=RUNS, time="5", memory="500M")
    handle = metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    (job,) = handle.job_ids
    task = f"{job}_0"
    start = tmp_path / f"start-{INTERRUPTED}"
    for attempt in range(1, _ROUNDS + 1):
        deadline = time.monotonic() + 90
        while len(lines(start)) < attempt:  # this attempt is inside run 2 (30 s each time)
            assert time.monotonic() < deadline, f"run 2 did not start: {job_report(task)}"
            time.sleep(0.05)
        # Requeue just after a second begins and release the task at once, as this
        # module's first test once did by accident.
        time.sleep(1.02 - time.time() % 1.0)
        requeue(task)
        until = time.monotonic() + 10
        while (state := queue_state(task)) and not state.startswith("RUNNING"):
            assert time.monotonic() < until, f"the requeue never ended: {job_report(task)}"
            if state.startswith("PENDING"):
                subprocess.run(
                    ["scontrol", "update", f"jobid={task}", "StartTime=now"],
                    check=False,
                    capture_output=True,
                )
            time.sleep(0.02)
        # A refused relaunch may be listed RUNNING for a moment before it ends: the task
        # leaving the queue says refused, run 2 starting again says accepted.
        until = time.monotonic() + 30
        while queue_state(task) and len(lines(start)) == attempt:
            assert time.monotonic() < until, f"relaunch neither ran nor ended: {job_report(task)}"
            time.sleep(0.1)
        if len(lines(start)) == attempt:
            break  # refused: the task left the queue for good
    else:
        pytest.skip(f"slurmd accepted {_ROUNDS} early relaunches (the race was never hit)")
    began = time.monotonic()
    results = handle.result(timeout=60)  # 5 minutes without the fix
    took = time.monotonic() - began
    by_run = {r.run_id: r.record for r in results}
    records = [by_run[run_id] for run_id in handle.run_ids]
    assert [r.status for r in records] == [RunState.SUCCESS] * 2 + [RunState.CANCELLED] + [
        RunState.FAILED
    ] * 3, (records, job_report(task))
    assert records[INTERRUPTED].reason == FailureReason.PREEMPTED
    for record in records[INTERRUPTED + 1 :]:
        assert record.reason == FailureReason.CRASHED, record
        assert record.error is not None and "SLURM ended it: FAILED" in record.error.message
        assert "DUE TO JOB REQUEUE" in record.error.message, record.error.message
    # Nothing ran after the refused relaunch, and nothing completed twice.
    assert [len(lines(tmp_path / f"start-{x}")) for x in range(RUNS)] == [1, 1, attempt] + [0] * 3
    assert [len(lines(tmp_path / f"done-{x}")) for x in range(RUNS)] == [1, 1, 0, 0, 0, 0]
    status = handle.status
    assert (status.completed, status.failed, status.pending, status.running) == (2, 4, 0, 0)
    assert status.reasons == {"crashed": 3, "preempted": 1}, status.reasons
    print(f"refused relaunch (attempt {attempt}) reported after {took:.1f} s")


def test_requeue_false_is_said_to_slurm(tmp_path: Path, no_leftover_jobs: list[str]) -> None:
    """``SlurmConfig(requeue=False)`` holds where the site requeues by default.

    SLURM's ``JobRequeue=1`` default (this cluster's too) makes every batch job
    requeueable unless it says ``--no-requeue``: leaving out ``--requeue`` is not enough.
    """
    exp = metalab.Experiment(
        name="not-requeueable",
        version="1",
        context={"dir": str(tmp_path), "long": 0},
        operation=counted_op,
        params=metalab.grid(x=[0]),
        seeds=metalab.seeds(base=6, replicates=1),
    )
    flags = {}
    for requeueable in (True, False):
        config = metalab.SlurmConfig(requeue=requeueable, time="5", memory="200M")
        store = str(tmp_path / f"store-{requeueable}")
        handle = metalab.run(exp, store=store, executor=metalab.SlurmExecutor(config))
        no_leftover_jobs.extend(handle.job_ids)
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", handle.job_ids[0]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        flags[requeueable] = {field for field in shown.split() if field.startswith("Requeue=")}
        handle.cancel()
    wait_until_gone(no_leftover_jobs)
    assert flags == {True: {"Requeue=1"}, False: {"Requeue=0"}}, flags
