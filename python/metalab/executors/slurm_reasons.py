"""Why a SLURM array task ended: the scheduler's verdict as a :class:`FailureReason`.

Two sources, best first:

1. Accounting (``sacct``), when the cluster has it: ONE call for every array job of a
   launch, ``sacct -X -n -P -j <ids> --format=JobID,State,ExitCode``, parsed per array task
   (``123_4|OUT_OF_MEMORY|0:125``). The verdict of the task's latest attempt. A cluster
   without accounting answers "Slurm accounting storage is disabled": that is remembered
   for the life of the process, so later polls do not ask again.
2. The last line of the task's log, where ``slurmstepd`` writes ``Detected 1 oom-kill
   event(s)`` or ``*** JOB ... CANCELLED AT ... DUE TO TIME LIMIT ***``.

The worker records ``timeout`` and ``preempted`` itself when SLURM warns it first
(``--signal=B:USR1@N``, :mod:`metalab.worker`); these sources explain the tasks that were
killed without a warning (the OOM killer sends SIGKILL) or never started.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from metalab.records import FailureReason

__all__ = [
    "TaskEnd",
    "parse_sacct",
    "reason_from_log",
    "reason_of_state",
    "sacct_task_ends",
]

_SACCT_TIMEOUT_S = 30.0
_FORMAT = "JobID,State,ExitCode"

# sacct job states (man sacct, "JOB STATE CODES") that end a task, and what they mean.
_STATE_REASONS = {
    "TIMEOUT": FailureReason.TIMEOUT,
    "DEADLINE": FailureReason.TIMEOUT,
    "OUT_OF_MEMORY": FailureReason.OUT_OF_MEMORY,
    "PREEMPTED": FailureReason.PREEMPTED,
    "NODE_FAIL": FailureReason.NODE_FAIL,
    "BOOT_FAIL": FailureReason.NODE_FAIL,
    "CANCELLED": FailureReason.CANCELLED,
    "REVOKED": FailureReason.CANCELLED,
    "FAILED": FailureReason.CRASHED,
}
_FINAL_OK = frozenset({"COMPLETED"})
_TASK_ID = re.compile(r"([0-9]+)_([0-9]+)")

# slurmstepd's last words in a task's log, most specific first.
_LOG_REASONS = (
    ("oom-kill", FailureReason.OUT_OF_MEMORY),
    ("out of memory", FailureReason.OUT_OF_MEMORY),
    ("DUE TO TIME LIMIT", FailureReason.TIMEOUT),
    ("DUE TO PREEMPTION", FailureReason.PREEMPTED),
    ("DUE TO JOB REQUEUE", FailureReason.PREEMPTED),
    ("DUE TO NODE FAILURE", FailureReason.NODE_FAIL),
    ("CANCELLED AT", FailureReason.CANCELLED),
)

_accounting_disabled = False
"""Set once sacct said the cluster keeps no accounting (asked again only by a new process)."""


@dataclass(frozen=True)
class TaskEnd:
    """The accounting verdict on one array task."""

    state: str
    """sacct's state word (``OUT_OF_MEMORY``; ``CANCELLED by 0`` is ``CANCELLED``)."""
    exit_code: str
    """sacct's ``ExitCode`` (``status:signal``, e.g. ``0:125``)."""

    @property
    def reason(self) -> FailureReason | None:
        """The reason kind, or None for a task that completed or has not ended yet."""
        return reason_of_state(self.state)

    @property
    def finished(self) -> bool:
        """True when the state is final (the task will not run again by itself)."""
        return self.state in _FINAL_OK or self.state in _STATE_REASONS


def reason_of_state(state: str) -> FailureReason | None:
    """The reason kind of a sacct/scontrol job state; None if it is not a failure."""
    return _STATE_REASONS.get(state.split(" ", 1)[0].strip().upper())


def parse_sacct(text: str) -> dict[tuple[str, int], TaskEnd]:
    """Parse ``sacct -X -n -P --format=JobID,State,ExitCode`` output.

    Returns:
        ``(array job id, array index) -> TaskEnd`` for every line naming one array task
        (``123_4``); lines of pending ranges (``123_[5-9]``), plain jobs, steps or another
        shape are skipped. When a task appears twice (``-D``), the later line wins.
    """
    ends: dict[tuple[str, int], TaskEnd] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        match = _TASK_ID.fullmatch(parts[0].strip())
        if match is None:
            continue
        state = parts[1].strip().split(" ", 1)[0].upper()
        ends[(match.group(1), int(match.group(2)))] = TaskEnd(state, parts[2].strip())
    return ends


def sacct_task_ends(job_ids: Sequence[str]) -> dict[tuple[str, int], TaskEnd] | None:
    """Ask accounting, in one call, how the array tasks of ``job_ids`` ended.

    Returns:
        The parsed answer (see :func:`parse_sacct`), or None when accounting cannot
        answer: no ``sacct`` on PATH, accounting disabled (remembered for this process),
        a failing or hanging call. None is never an error: the log is the fallback.
    """
    global _accounting_disabled
    if not job_ids or _accounting_disabled or shutil.which("sacct") is None:
        return None
    argv = ["sacct", "-X", "-n", "-P", f"--format={_FORMAT}", "-j", ",".join(job_ids)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_SACCT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "accounting storage is disabled" in (done.stderr + done.stdout).lower():
        _accounting_disabled = True
        return None
    if done.returncode != 0:
        return None
    return parse_sacct(done.stdout)


def reason_from_log(last_line: str | None) -> FailureReason | None:
    """The reason slurmstepd gave on the last line of a task's log, if it gave one."""
    if not last_line:
        return None
    for needle, reason in _LOG_REASONS:
        if needle in last_line:
            return reason
    return None
