"""The SLURM worker's signals, turned into runs that say why they ended.

SLURM warns a task before it ends it:

- ``SIGUSR1`` (``#SBATCH --signal=B:USR1@N``, the batch script ``exec``-s Python so the
  signal reaches it) about N seconds before the walltime, and at preemption when the
  cluster sets ``SlurmctldParameters=preempt_send_user_signal``;
- ``SIGTERM`` at ``scancel``, at the walltime (when no warning came first), at preemption
  and at ``scontrol requeue``; ``SIGKILL`` follows ``KillWait`` seconds later.

The warning interrupts nothing: the running run keeps the whole walltime and the block
goes on (a run that does not fit is stopped by the SIGTERM the walltime brings, and the
runs of the block not started by then are recorded as ``timeout`` too: they did not fit).
SIGTERM raises :class:`~metalab.execution.RunInterrupted` in the running operation with the
reason, which the record keeps. The reason is asked from the controller, once
(``scontrol show job -o``, a few milliseconds): a restart count above the one the task
started with is a requeue or preemption (``preempted``: the task runs again and executes
only what is not done; the controller raises the count before the SIGTERM of either);
after the warning, or with the run time at the limit, a ``timeout``; otherwise
``cancelled``. When the controller does not answer, a SIGTERM after the warning is a
timeout, any other a cancellation.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from metalab.execution import RunInterrupted, failure_record, persist
from metalab.records import FailureReason, StoredState

if TYPE_CHECKING:
    from metalab.plan import RunPlan
    from metalab.store.base import Store

__all__ = ["WorkerSignals", "parse_duration"]

_TIMEOUT_SLACK_S = 60
"""Extra seconds on top of the warning's lead still counted as "near the walltime": SLURM
checks limits on a ~30 s tick, so the warning may come that much early."""
_SCONTROL_TIMEOUT_S = 5.0
_FIELD = re.compile(r"\b(TimeLimit|RunTime|Restarts)=(\S+)")


def parse_duration(text: str) -> int | None:
    """Seconds of a SLURM duration (``[D-]HH:MM:SS``, ``MM:SS``); None if not one."""
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not parts or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    if len(parts) == 1:
        seconds *= 60  # a lone number is minutes, as in sbatch --time
    return days * 86400 + seconds


def _job_fields() -> dict[str, str]:
    """``TimeLimit``, ``RunTime`` and ``Restarts`` of this task from the controller."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    import subprocess  # only when a signal came: array tasks start without it (~10 ms)

    try:
        done = subprocess.run(
            ["scontrol", "show", "job", "-o", job],
            capture_output=True,
            text=True,
            timeout=_SCONTROL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(_FIELD.findall(done.stdout)) if done.returncode == 0 else {}


class WorkerSignals:
    """SIGTERM/SIGUSR1 handlers of one array task (see the module docstring).

    Args:
        lead: seconds before the walltime that ``--signal`` asks SLURM to warn.
    """

    def __init__(self, lead: int) -> None:
        self.lead = lead
        self.warned = False
        """SLURM's walltime warning came: the SIGTERM that follows is the walltime's."""
        self.reason: FailureReason | None = None
        """The reason of the ending signal, once one came (later ones are ignored)."""
        self._started_restarts = os.environ.get("SLURM_RESTART_COUNT", "0")

    def install(self) -> None:
        """Handle SIGTERM and SIGUSR1 in this (the main) thread."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_warning)

    def _on_warning(self, signum: int, frame: FrameType | None) -> None:
        # The running run keeps its time: it is interrupted only by the SIGTERM that the
        # walltime brings (then recorded as a timeout), and may well finish before; so
        # may the next runs of the block. A warning far from the walltime is preemption's
        # (preempt_send_user_signal): its SIGTERM is told apart by the restart count.
        fields = _job_fields()
        limit = parse_duration(fields.get("TimeLimit", ""))
        ran = parse_duration(fields.get("RunTime", ""))
        far = limit is not None and ran is not None and limit - ran > self.lead + _TIMEOUT_SLACK_S
        if not far:
            self.warned = True

    def _classify(self) -> tuple[FailureReason, str]:
        fields = _job_fields()
        restarts = fields.get("Restarts")
        if restarts is not None and restarts != self._started_restarts:
            return FailureReason.PREEMPTED, (
                "preempted: SLURM requeued the array task (scontrol requeue or preemption); "
                "it runs again and executes only what is not done"
            )
        limit = parse_duration(fields.get("TimeLimit", ""))
        ran = parse_duration(fields.get("RunTime", ""))
        near_limit = limit is not None and ran is not None and ran >= limit - _TIMEOUT_SLACK_S
        if self.warned or near_limit:
            return FailureReason.TIMEOUT, (
                f"the array task reached its walltime ({fields.get('TimeLimit', '?')})"
            )
        return FailureReason.CANCELLED, "SLURM sent SIGTERM (scancel)"

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None:
            return  # the run is being recorded: let that finish before SIGKILL
        reason, message = self._classify()
        self.reason = reason
        raise RunInterrupted(message, reason)

    def abandon(self, plan: RunPlan, store: Store, indices: Sequence[int], worker_id: str) -> None:
        """After the walltime's SIGTERM, record the block's runs not started as timed out.

        They did not run because the task's walltime was too short for its block: saying
        ``timeout`` lets a retry give them more (:mod:`metalab.executors.slurm_retry`). After
        any other signal they stay unrecorded: a requeued task runs them, a cancelled
        launch counts them as cancelled.
        """
        if self.reason is not FailureReason.TIMEOUT or not indices:
            return
        tasks = [plan.task(t) for t in indices]
        states = store.states([task.run_id for task in tasks])
        why = RunInterrupted(
            "not started: the array task reached its walltime first", FailureReason.TIMEOUT
        )
        for task, state in zip(tasks, states, strict=True):
            if state is StoredState.ABSENT:
                persist(store, failure_record(plan, task, why, "slurm", worker_id))
