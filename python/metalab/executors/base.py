"""The executor interface: launch a batch of tasks, report on them, cancel them.

An executor turns a :class:`Job` into a :class:`Launch`. Executors never decide *what*
to run (resume filtering happens before) nor *how* a run executes (that is
:func:`metalab.execution.execute_task`), only *where* and *when*.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metalab.executors.job import Job
from metalab.plan import RunPlan
from metalab.records import RunRecord, RunState, StoredState
from metalab.store.base import Store

if TYPE_CHECKING:
    from metalab.executors.claimed import ClaimedTasks

__all__ = ["Executor", "Job", "Launch", "LaunchCounts", "TallyingLaunch"]


@dataclass
class LaunchCounts:
    """Progress of a launch's tasks."""

    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    elsewhere: int = 0
    """Runs claimed by another launch of the experiment: executing there, waited for."""


class Launch(ABC):
    """Tasks handed to an executor."""

    @abstractmethod
    def counts(self) -> LaunchCounts:
        """Current counts of this launch's tasks."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> bool:
        """Block until every task finished (or ``timeout`` passed); True when finished."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop scheduling new tasks; nothing is left ``running`` forever."""

    @property
    def fatal_errors(self) -> list[BaseException]:
        """Errors that stopped execution itself (not failures of runs)."""
        return []

    @property
    def tracks_store(self) -> bool:
        """True when status must come from the store (tasks run outside this process)."""
        return False

    @property
    def job_ids(self) -> Sequence[str]:
        """Scheduler job ids of the launch (SLURM arrays); empty for in-process launches."""
        return ()

    @property
    def reconnect_info(self) -> dict[str, Any]:
        """What ``metalab.reconnect`` needs beyond the plan, saved in the launch pointer."""
        return {}


class Executor(ABC):
    """Runs the tasks of a job somewhere."""

    name: str = "executor"
    ships_experiment: bool = True
    """True when runs execute in other processes that rebuild the experiment from a spec."""

    @abstractmethod
    def launch(self, job: Job) -> Launch:
        """Start executing ``job`` and return immediately."""

    def describe(self, plan: RunPlan, store: Store, todo: list[int]) -> None:
        """Print what :meth:`launch` would do (``metalab.run(..., dry_run=True)``)."""
        done = plan.total - len(todo)
        print(
            f"dry run: {len(todo)} of {plan.total} runs to execute ({done} already done) "
            f"with {self!r} into {store.locator}"
        )


@dataclass
class TallyingLaunch(Launch):
    """A launch whose counts are tallied in this process as records arrive."""

    job: Job
    _counts: LaunchCounts = field(default_factory=LaunchCounts)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _finished: threading.Event = field(default_factory=threading.Event)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    claims: ClaimedTasks | None = None

    def counts(self) -> LaunchCounts:
        with self._lock:
            counts = LaunchCounts(**vars(self._counts))
        if self.claims is not None:
            counts.elsewhere = self.claims.deferred
        return counts

    def claimed_tasks(self) -> ClaimedTasks:
        """The launch's tasks behind claims (made on first use; see ``claimed.py``)."""
        if self.claims is None:
            from metalab.executors.claimed import ClaimedTasks

            job = self.job
            self.claims = ClaimedTasks(job, self.landed)
        return self.claims

    def landed(self, task_index: int, state: StoredState) -> None:
        """Count a run another launch executed (it held the claim) as finished."""
        from metalab.execution import base_record

        status = RunState.SUCCESS if state is StoredState.DONE else RunState.FAILED
        with self._lock:
            if status is RunState.SUCCESS:
                self._counts.succeeded += 1
            else:
                self._counts.failed += 1
        if self.job.on_record is not None:
            plan = self.job.plan
            self.job.on_record(base_record(plan, plan.task(task_index), status))

    def started(self) -> None:
        """Count one task as running."""
        with self._lock:
            self._counts.running += 1

    def finished(self, record: RunRecord) -> None:
        """Count one finished task and forward its record to the job's callback."""
        with self._lock:
            self._counts.running -= 1
            if record.status is RunState.SUCCESS:
                self._counts.succeeded += 1
            elif record.status is RunState.CANCELLED:
                self._counts.cancelled += 1
            else:
                self._counts.failed += 1
        if self.job.on_record is not None:
            self.job.on_record(record)

    def fatal(self, error: BaseException) -> None:
        """Record an infrastructure error (store unwritable...) that stopped a worker."""
        with self._lock:
            self._counts.running -= 1
            self.errors.append(error)

    def skipped_by_cancel(self, n: int) -> None:
        """Count tasks never started because the launch was cancelled."""
        with self._lock:
            self._counts.cancelled += n

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def fatal_errors(self) -> list[BaseException]:
        with self._lock:
            return list(self.errors)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def is_cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancelled.is_set()

    def mark_finished(self) -> None:
        """Signal that no task of this launch will run any more."""
        self._finished.set()
