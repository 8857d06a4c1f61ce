"""``RunHandle`` and ``RunStatus``: what ``metalab.run`` and ``metalab.reconnect`` hand back.

A handle watches one launch: counts from the launch (in-process executors) or from the
store's markers (executors whose runs report through the store, e.g. SLURM), a live
progress display, ``result()`` that waits and returns the experiment's
:class:`~metalab.results.Results`, and ``cancel()``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from metalab.errors import ResultTimeoutError
from metalab.executors.base import Launch, LaunchCounts
from metalab.html import handle_html, status_html
from metalab.plan import RunPlan
from metalab.progress import Progress, ProgressSnapshot
from metalab.records import StoredState
from metalab.results import Results, results_from_store
from metalab.store.base import Store

__all__ = ["RunHandle", "RunStatus"]


@dataclass(frozen=True)
class RunStatus:
    """Counts of an experiment's runs. ``completed`` includes ``skipped`` (done before)."""

    total: int
    completed: int
    running: int
    pending: int
    failed: int
    skipped: int
    cancelled: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """Runs that did not succeed, by reason kind (:class:`~metalab.records.FailureReason`
    values, ``"unknown"`` for records written before reasons existed), most first."""
    elsewhere: int = 0
    """Of the ``pending`` runs, those claimed by another launch of the experiment (it
    executes them; this one waits for them to land)."""

    @property
    def is_complete(self) -> bool:
        """True when nothing is pending or running."""
        return self.pending == 0 and self.running == 0

    def _repr_html_(self) -> str:
        """The counts and a bar of them, as HTML (for notebooks)."""
        return status_html(self)


class RunHandle:
    """A launched experiment: watch it, wait for it, cancel it."""

    def __init__(
        self,
        plan: RunPlan,
        store: Store,
        launch: Launch | None,
        skipped: int,
        progress: Progress | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self._launch = launch
        self._skipped = skipped
        self._progress = progress
        self._poll_every = 1.0
        self._failures_reported = False
        # Metric display of launches that report through the store (SLURM): which runs'
        # records were already looked at, and the latest value of each metric.
        self._metrics_seen: bytearray | None = None
        self._latest: dict[str, Any] = {}
        self._reason_of: dict[str, str] = {}

    @property
    def experiment_id(self) -> str:
        """The experiment's ``name:version``."""
        return self.plan.experiment_id

    @property
    def run_ids(self) -> list[str]:
        """Run IDs of every task of the experiment, in task order."""
        return self.plan.run_ids

    @property
    def job_ids(self) -> tuple[str, ...]:
        """SLURM job ids of the launch's arrays, in submission order.

        Empty for local executors and for a resubmission that had nothing to submit.
        """
        jobs = self._launch.job_ids if self._launch is not None else ()
        return tuple(str(job) for job in jobs)

    @property
    def status(self) -> RunStatus:
        """Current counts (never blocks for long)."""
        total = self.plan.total
        launch = self._launch
        counts = launch.counts() if launch is not None else LaunchCounts()
        if launch is None or launch.tracks_store:
            states = self.store.states(self.run_ids)
            completed = states.count(StoredState.DONE)
            failed = states.count(StoredState.FAILED)
            running = min(counts.running, total - completed - failed)
            cancelled = counts.cancelled
        else:
            completed = self._skipped + counts.succeeded
            failed, running, cancelled = counts.failed, counts.running, counts.cancelled
        pending = max(total - completed - failed - running - cancelled, 0)
        reasons = self._reasons() if failed else {}
        elsewhere = min(counts.elsewhere, pending)
        return RunStatus(
            total, completed, running, pending, failed, self._skipped, cancelled, reasons, elsewhere
        )

    def _reasons(self) -> dict[str, int]:
        """Failed runs by reason; each failed run's record is read once per failure."""
        ids = self.run_ids
        states = self.store.states(ids)
        failed = [i for i, st in zip(ids, states, strict=True) if st is StoredState.FAILED]
        known, failing = self._reason_of, set(failed)
        for run_id in list(known):
            if run_id not in failing:
                del known[run_id]  # retried since: its next failure is read again
        wanted = [run_id for run_id in failed if run_id not in known]
        if wanted:
            for record in self.store.load_records(run_ids=wanted).records:
                known[record.run_id] = record.reason.value if record.reason else "unknown"
        tally = Counter(known[run_id] for run_id in failed if run_id in known)
        return dict(tally.most_common())

    @property
    def is_complete(self) -> bool:
        """True when no run is pending or running."""
        if self._launch is not None and not self._launch.tracks_store:
            return self._launch.wait(0)
        # Counts from the store cannot show work still to come (SLURM's retry job about
        # to resubmit failed runs): the launch has the last word.
        return self.status.is_complete and (self._launch is None or self._launch.wait(0))

    def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        launch = self._launch
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            step = self._poll_every if remaining is None else min(self._poll_every, remaining)
            finished = launch.wait(step) if launch is not None else self.status.is_complete
            if self._progress is not None and (launch is None or launch.tracks_store):
                self._progress.update(self._snapshot())
            if finished:
                return
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None
                raise ResultTimeoutError(
                    f"experiment {self.experiment_id} not finished after {timeout}s; its runs "
                    f"go on, call result() again to keep waiting",
                    experiment_id=self.experiment_id,
                    timeout=timeout,
                )
            if launch is None:
                time.sleep(step)

    def _snapshot(self) -> ProgressSnapshot:
        status = self.status
        if self._progress is not None and self._progress.metric_formats:
            self._read_new_metrics()
        return ProgressSnapshot(
            total=status.total,
            completed=status.completed,
            failed=status.failed,
            skipped=status.skipped,
            cancelled=status.cancelled,
            latest=dict(self._latest),
            reasons=dict(status.reasons),
        )

    def _read_new_metrics(self) -> None:
        """Update the latest metric values from the records of runs finished since last time.

        Only the records of runs newly marked done are read, at most
        :data:`_METRIC_READS` per poll (the display shows one value per metric, so reading
        thousands of records that landed together would only cost time); the newest of
        them, by finish time, wins.
        """
        done = [state is StoredState.DONE for state in self.store.states(self.run_ids)]
        seen = self._metrics_seen
        if seen is None:
            seen = self._metrics_seen = bytearray(len(done))
        new = [i for i, (d, s) in enumerate(zip(done, seen, strict=True)) if d and not s]
        if not new:
            return
        for i in new:
            seen[i] = 1
        # Array tasks run in index order, so the highest indices are the likeliest latest.
        wanted = [self.run_ids[i] for i in new[-_METRIC_READS:]]
        records = self.store.load_records(run_ids=wanted).records
        records.sort(key=lambda r: r.finished_at.timestamp() if r.finished_at else 0.0)
        for record in records:
            self._latest.update(record.metrics)

    def result(self, timeout: float | None = None) -> Results:
        """Block until every run finished, then return this experiment's results.

        The first call prints, on stderr, one line per error type of the runs that did
        not succeed (count, first message, the command that shows the traceback).

        Ctrl-C while waiting prints one line on stderr (whether the runs keep going and
        the exact call that watches or cancels them) and raises ``KeyboardInterrupt``
        from here, without the frames of the wait loop.

        Raises:
            ResultTimeoutError: not finished within ``timeout`` seconds (also a builtin
                ``TimeoutError``); the runs go on.
            StoreError: the store failed while runs were being written (disk full...);
                runs written before the failure are intact and resume will finish the rest.
            MetalabError: whatever else stopped the launch, with its own class (e.g. the
                ``ExecutorError`` of a process worker that could not start), its message
                prefixed with the experiment and how to finish it.
        """
        try:
            self._wait(timeout)
        except KeyboardInterrupt:
            if self._progress is not None:
                self._progress.close()
            print(self._interrupted_line(), file=sys.stderr, flush=True)
            # A fresh exception: the traceback ends here instead of deep in a poll loop.
            raise KeyboardInterrupt from None
        if self._progress is not None and self.is_complete:
            self._progress.close()
        if self._launch is not None and self._launch.fatal_errors:
            raise _with_context(self._launch.fatal_errors[0], self.experiment_id)
        results = results_from_store(self.store, run_ids=self.run_ids)
        if not self._failures_reported:
            # Once per handle: a second result() call is asking for data, not news.
            self._failures_reported = True
            report = results.failure_report()
            if report:
                print(report, file=sys.stderr)
        return results

    def _interrupted_line(self) -> str:
        """The one line printed when Ctrl-C stops :meth:`result`."""
        again = f"metalab.reconnect({self.store.locator!r}, experiment_id={self.experiment_id!r})"
        jobs = self.job_ids
        if jobs:
            return (
                f"metalab: interrupted; SLURM job(s) {' '.join(jobs)} of {self.experiment_id} "
                f"keep running. Watch: {again}.result()  Cancel: {again}.cancel()"
            )
        if self._launch is not None and self._launch.tracks_store:
            return f"metalab: interrupted; runs go on elsewhere. Watch: {again}.result()"
        return (
            f"metalab: interrupted; runs of {self.experiment_id} go on in this process until "
            f"it exits (handle.result() waits again, handle.cancel() stops them); finished "
            f"runs are stored, metalab.run(..., resume=True) completes the rest"
        )

    def results(self, timeout: float | None = None) -> Results:
        """Alias of :meth:`result`."""
        return self.result(timeout)

    def cancel(self) -> None:
        """Stop launching new runs; runs already going finish or are marked cancelled."""
        if self._launch is not None:
            self._launch.cancel()

    def __repr__(self) -> str:
        return f"RunHandle({self.experiment_id!r}, {self.status})"

    def _repr_html_(self) -> str:
        """Experiment, store and current status as HTML (for notebooks)."""
        return handle_html(self.experiment_id, self.store.locator, self.status)


_METRIC_READS = 64
"""Most records a progress poll reads for its latest metric values."""


def _with_context(error: BaseException, experiment_id: str) -> BaseException:
    """``error`` (same object, same class) with the experiment and the way out in its text.

    The class and fields stay the caller's to catch (``ExecutorError``, ``StoreError``,
    ``UntrustedFileError`` with its path...). A plain one-message exception gets the
    context prepended to its message, once; any other gets it as a note.
    """
    prefix = f"experiment {experiment_id} stopped: "
    suffix = "; finished runs are stored, run again with resume=True to complete"
    args = error.args
    plain = type(error).__str__ is BaseException.__str__
    if plain and len(args) == 1 and isinstance(args[0], str):
        if not args[0].startswith(prefix):
            error.args = (f"{prefix}{type(error).__name__}: {args[0]}{suffix}",)
    elif not any(note.startswith(prefix) for note in getattr(error, "__notes__", ())):
        error.add_note(f"{prefix}{type(error).__name__}{suffix}")
    return error
