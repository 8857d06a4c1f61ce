"""Helpers of the SLURM tests that requeue or preempt a running array task.

A requeued task (``scontrol requeue``, or preemption with ``PreemptMode=REQUEUE``) goes
back to PENDING with a BeginTime about 120 s ahead. The tests skip that wait with
``scontrol update StartTime=now``, but never within the wall-clock second the running
attempt was killed in: slurmd refuses to launch a job whose credential is not strictly
newer (in whole seconds) than the revocation of the killed attempt ("Job credential
revoked"), and the task then ends FAILED for good instead of running again. That race
is what the requeue's BeginTime protects against, and it is what made the requeue test
miss its deadline on the CI cluster: it released the task a few milliseconds after the
requeue, in the same second.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "KILL_SECOND_MARGIN_S",
    "Watch",
    "counted_op",
    "job_report",
    "lines",
    "queue_state",
    "release_requeued",
    "requeue",
    "wait_until_gone",
    "wait_until_not_running",
]

KILL_SECOND_MARGIN_S = 1.5
"""Seconds after the kill before a requeued task may be started: past the kill's
wall-clock second (credential times are whole seconds), with room for clock rounding."""
NUDGE_EVERY_S = 1.0


def counted_op(context: Any, params: Any, capture: Any) -> None:
    """Note each start (with the task's restart count) and each completion of the run.

    Side files in ``context["dir"]``: ``start-<x>`` gets one line per start (the value of
    ``SLURM_RESTART_COUNT``), ``done-<x>`` one per completion. The first execution of run
    ``x == context["long"]`` takes 30 s (every execution of it with ``context["always"]``),
    so that an interruption surely lands inside it on a loaded machine; every other
    execution takes about a second.
    """
    root = Path(context["dir"])
    x = params["x"]
    start = root / f"start-{x}"
    first = not start.exists()
    with open(start, "a") as fh:
        fh.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
    long = x == context["long"] and (first or context.get("always", False))
    time.sleep(30.0 if long else 1.0)
    with open(root / f"done-{x}", "a") as fh:
        fh.write("done\n")
    capture.metric("y", x)


def lines(path: Path) -> list[str]:
    """The lines of a side file (none when it does not exist yet)."""
    return path.read_text().splitlines() if path.exists() else []


def queue_state(job: str) -> str:
    """squeue's ``STATE REASON`` of ``job`` (e.g. ``PENDING BeginTime``); '' when absent."""
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True, check=False
    ).stdout.strip()


def job_report(job: str) -> str:
    """What squeue and accounting say about ``job``, for assertion messages."""
    sacct = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-j", job, "--format=JobID,State,ExitCode,Start,End"],
        capture_output=True,
        text=True,
        check=False,
    )
    history = " ".join(sacct.stdout.split()) or sacct.stderr.strip()
    return f"squeue: {queue_state(job)!r}; sacct -D: {history!r}"


def requeue(task: str) -> float:
    """``scontrol requeue`` a running array task; the wall-clock time just after.

    The controller asked slurmd to kill the attempt (which revokes its credential) before
    the call returned, so the returned time is at or after the revocation.
    """
    subprocess.run(["scontrol", "requeue", task], check=True, capture_output=True)
    return time.time()


def wait_until_gone(jobs: list[str], timeout: float = 60.0) -> None:
    """Wait until squeue lists none of ``jobs`` (cancelled ones pass through COMPLETING).

    While a job completes, its node is ``comp`` in sinfo, which the next test's
    ``require_slurm`` does not count as usable.
    """
    deadline = time.monotonic() + timeout
    while left := [job for job in jobs if queue_state(job)]:
        assert time.monotonic() < deadline, f"still queued: {[job_report(j) for j in left]}"
        time.sleep(0.2)


def wait_until_not_running(task: str, timeout: float = 60.0) -> float:
    """Wait until ``task`` leaves RUNNING (preempted: COMPLETING or PENDING); the time.

    The returned wall-clock time is after the kill that ended the running attempt.
    """
    deadline = time.monotonic() + timeout
    while queue_state(task).startswith("RUNNING"):
        assert time.monotonic() < deadline, f"{task} kept running: {job_report(task)}"
        time.sleep(0.1)
    return time.time()


def release_requeued(
    task: str, *, killed_at: float, started: Callable[[], bool], timeout: float = 150.0
) -> float:
    """Start a requeued task now instead of after its ~2 minute BeginTime.

    ``StartTime=now`` is asked once the kill's second is past
    (:data:`KILL_SECOND_MARGIN_S` after ``killed_at``), and again every second while the
    task stays pending: an update that lands while the controller is still processing the
    requeue is overwritten by the requeue's own BeginTime. Fails as soon as the task is
    missing from squeue (a requeued task stays listed, COMPLETING then PENDING): it was
    not requeued, or slurmd refused its relaunch.

    Args:
        task: the array task (``<job>_<index>``).
        killed_at: wall-clock time at or after the kill of the running attempt
            (:func:`requeue`, :func:`wait_until_not_running`).
        started: True once the new attempt is seen running (e.g. its side file).
        timeout: seconds to wait (the BeginTime passes by itself after ~120 s).

    Returns:
        Seconds from ``killed_at`` until ``started()`` said so.
    """
    deadline = time.monotonic() + timeout
    nudged = 0.0
    absent = 0  # consecutive answers without the task: a requeued task is always listed
    while not started():
        assert time.monotonic() < deadline, f"{task} was not started again: {job_report(task)}"
        state = queue_state(task)
        absent = 0 if state else absent + 1
        if absent >= 5 and not started():
            raise AssertionError(f"{task} left the queue, not to run again: {job_report(task)}")
        now = time.time()
        due = now - killed_at >= KILL_SECOND_MARGIN_S and time.monotonic() - nudged >= NUDGE_EVERY_S
        if due and state.startswith("PENDING"):
            subprocess.run(
                ["scontrol", "update", f"jobid={task}", "StartTime=now"],
                check=False,
                capture_output=True,
            )
            nudged = time.monotonic()
        time.sleep(0.1)
    return time.time() - killed_at


class Watch:
    """What the store and ``handle.status`` said about unfinished runs while a task was away.

    ``unfinished`` collects ``(run_id, reason)`` of every record seen not successful,
    ``reasons`` every reason kind ``handle.status`` reported. Each look also makes the
    launch ask squeue (at most every :data:`FORCED_POLL_S`): its poll interval backs off
    to 30 s while nothing changes, so left alone it may never look during the few seconds
    the task is away, and a launch that took the requeued task for a dead one would go
    unnoticed.
    """

    FORCED_POLL_S = 0.5

    def __init__(self, handle: Any, store: Path) -> None:
        self.handle = handle
        self.store = store
        self.unfinished: set[tuple[str, str | None]] = set()
        self.reasons: set[str] = set()
        self.polls = 0
        self._polled = 0.0

    def look(self) -> None:
        """Read the experiment's records and status once."""
        from metalab.records import RunState
        from metalab.store.file import FileStore

        if time.monotonic() - self._polled >= self.FORCED_POLL_S:
            self.handle._launch.poll(force=True)
            self._polled = time.monotonic()
            self.polls += 1

        for record in FileStore(self.store).load_records(run_ids=self.handle.run_ids).records:
            if record.status is not RunState.SUCCESS:
                reason = record.reason.value if record.reason is not None else None
                self.unfinished.add((record.run_id, reason))
        self.reasons.update(self.handle.status.reasons)
