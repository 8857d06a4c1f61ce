"""A preempted array task is requeued by SLURM, runs again and executes only what is not done.

On the site profile, partition ``low`` (the default, ``PreemptMode=REQUEUE``) is preempted
by partition ``high`` (higher ``PriorityTier``). One array task of six runs takes every CPU
of the node in ``low``; once two runs are done and the third is mid-way, a one-CPU job is
submitted to ``high``: SLURM preempts the task (USR1 then SIGTERM, as
``preempt_send_user_signal`` and the script's ``--signal`` ask), requeues it, starts the
high job, and the test cancels that job and releases the requeued task
(:func:`cluster_tools.release_requeued`). Holding every CPU makes the preemption certain
and keeps it to this test's task: no other job can be running beside it.
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
    wait_until_gone,
    wait_until_not_running,
)
from site_cluster import use_site_cluster

import metalab
from metalab.records import RunState

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

RUNS = 6
INTERRUPTED = 2
"""The run that is mid-way when the task is preempted (runs 0 and 1 are done then)."""


def _partition_cpus(monkeypatch: pytest.MonkeyPatch) -> int:
    """CPUs of the node of partition ``low``; skip unless ``high`` can preempt it."""
    use_site_cluster(monkeypatch)
    shown = subprocess.run(
        ["scontrol", "show", "partition", "-o"], capture_output=True, text=True, check=False
    ).stdout
    parts = {line.split()[0].removeprefix("PartitionName="): line for line in shown.splitlines()}
    if "low" not in parts or "high" not in parts or "PreemptMode=REQUEUE" not in parts["low"]:
        from services import _unavailable

        _unavailable(
            "SLURM cluster has no preemptible partition low and partition high "
            "(run scripts/slurm-local-cluster.sh --profile site)"
        )
    cpus = subprocess.run(
        ["sinfo", "-h", "-p", "low", "-o", "%c"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(cpus[0])


def test_preempted_task_runs_again_and_executes_only_runs_not_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    cpus = _partition_cpus(monkeypatch)
    exp = metalab.Experiment(
        name="preempted",
        version="1",
        context={"dir": str(tmp_path), "long": INTERRUPTED},
        operation=counted_op,
        params=metalab.grid(x=list(range(RUNS))),
        seeds=metalab.seeds(base=5, replicates=1),
    )
    store = tmp_path / "store"
    config = metalab.SlurmConfig(
        partition="low", cpus=cpus, runs_per_task=RUNS, time="5", memory="500M"
    )
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

    preemptor = [
        "sbatch",
        "--parsable",
        "--partition=high",
        "--cpus-per-task=1",
        "--mem=100M",
        "--time=5",
        "--job-name=metalab-test-preemptor",
        "--output=/dev/null",
        "--wrap=sleep 300",
    ]
    submitted = subprocess.run(preemptor, capture_output=True, text=True, check=False)
    assert submitted.returncode == 0, f"sbatch of the high job failed: {submitted.stderr}"
    high = submitted.stdout.strip()
    try:
        killed_at = wait_until_not_running(task)
        deadline = time.monotonic() + 60
        while not queue_state(high).startswith("RUNNING"):
            assert time.monotonic() < deadline, f"the high job never started: {job_report(high)}"
            watch.look()
            time.sleep(0.2)
        # The high job got the CPU the preempted task held: its work is done here.
        subprocess.run(["scancel", high], check=True)

        def restarted() -> bool:
            watch.look()
            return len(lines(tmp_path / f"start-{INTERRUPTED}")) > 1

        release_requeued(task, killed_at=killed_at, started=restarted)
        deadline = time.monotonic() + 90
        while not handle.is_complete:
            assert time.monotonic() < deadline, f"the task did not finish: {job_report(task)}"
            watch.look()
            time.sleep(0.3)
        results = handle.result(timeout=30)
    finally:
        subprocess.run(["scancel", high], check=False, capture_output=True)
        wait_until_gone([high])
    history = job_report(task)

    assert len(results) == RUNS
    assert [r.record.status for r in results] == [RunState.SUCCESS] * RUNS
    # Every run completed exactly once; only the interrupted one started twice, the
    # second time in the same array task restarted by SLURM (restart count 1).
    assert [len(lines(tmp_path / f"done-{x}")) for x in range(RUNS)] == [1] * RUNS
    starts = [lines(tmp_path / f"start-{x}") for x in range(RUNS)]
    assert starts == [["0"], ["0"], ["0", "1"], ["1"], ["1"], ["1"]], starts
    status = handle.status
    counts = (status.total, status.completed, status.failed, status.pending, status.running)
    assert counts == (RUNS, RUNS, 0, 0, 0)
    assert (status.cancelled, status.reasons) == (0, {})
    # While the task waited to run again, the interrupted run (and only it) stood in the
    # store as preempted, and handle.status said so; its log keeps the word after the
    # re-execution succeeded.
    interrupted = handle.run_ids[INTERRUPTED]
    assert watch.unfinished == {(interrupted, "preempted")}, (watch.unfinished, history)
    assert watch.reasons == {"preempted"}, watch.reasons
    log = {r.run_id: r.log for r in results}
    assert "preempted" in log[interrupted], log[interrupted]
    assert not [run for run, text in log.items() if run != interrupted and "preempt" in text]
    # SLURM itself recorded the preemption of the first attempt.
    assert "PREEMPTED" in history, history
