"""``metalab.run``: plan an experiment, skip what is done, launch the rest, hand back a handle."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metalab import _core
from metalab.context import context_to_json
from metalab.errors import ExperimentError, ResultTimeoutError, StoreError, UnsafeLoadError
from metalab.execution import DerivedFn
from metalab.executors.base import Executor, Job, Launch, LaunchCounts
from metalab.executors.thread import ThreadExecutor
from metalab.experiment import Experiment
from metalab.html import handle_html, status_html
from metalab.identity import to_plain
from metalab.plan import RunPlan
from metalab.progress import Progress, ProgressSnapshot, make_progress
from metalab.records import RunRecord, utc_now
from metalab.results import Results
from metalab.resume import check_rerun, plan_resume
from metalab.spec import experiment_to_spec, spec_to_bytes
from metalab.staleness import encode_tasks
from metalab.store.base import Store
from metalab.store.locator import create_store

__all__ = ["RunHandle", "RunStatus", "launch_key", "run", "spec_key"]


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

    @property
    def is_complete(self) -> bool:
        """True when nothing is pending or running."""
        return self.pending == 0 and self.running == 0

    def _repr_html_(self) -> str:
        """The counts and a bar of them, as HTML (for notebooks)."""
        return status_html(self)


def spec_key(experiment_id: str) -> str:
    """Blob key of an experiment's worker spec."""
    return f"spec-{experiment_id}.json"


def launch_key(experiment_id: str | None = None) -> str:
    """Blob key of the latest launch (of one experiment, or of the whole store)."""
    return f"launch-{experiment_id}.json" if experiment_id else "launch-latest.json"


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
        jobs = getattr(self._launch, "job_ids", None) or ()
        return tuple(str(job) for job in jobs)

    @property
    def status(self) -> RunStatus:
        """Current counts (never blocks for long)."""
        total = self.plan.total
        launch = self._launch
        counts = launch.counts() if launch is not None else LaunchCounts()
        if launch is None or launch.tracks_store:
            completed = sum(self.store.completed(self.run_ids))
            failed = sum(self.store.failed(self.run_ids))
            running = min(counts.running, total - completed - failed)
            cancelled = counts.cancelled
        else:
            completed = self._skipped + counts.succeeded
            failed, running, cancelled = counts.failed, counts.running, counts.cancelled
        pending = max(total - completed - failed - running - cancelled, 0)
        return RunStatus(total, completed, running, pending, failed, self._skipped, cancelled)

    @property
    def is_complete(self) -> bool:
        """True when no run is pending or running."""
        if self._launch is not None and not self._launch.tracks_store:
            return self._launch.wait(0)
        return self.status.is_complete

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
        )

    def _read_new_metrics(self) -> None:
        """Update the latest metric values from the records of runs finished since last time.

        Only the records of runs newly marked done are read, at most
        :data:`_METRIC_READS` per poll (the display shows one value per metric, so reading
        thousands of records that landed together would only cost time); the newest of
        them, by finish time, wins.
        """
        done = self.store.completed(self.run_ids)
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
        from metalab.columnar import results_from_store

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


def _manifest(plan: RunPlan, store: Store, executor: Executor, launched: int) -> dict[str, Any]:
    exp = plan.experiment
    return {
        "experiment_id": exp.experiment_id,
        "name": exp.name,
        "version": exp.version,
        "description": exp.description,
        "tags": list(exp.tags),
        "metadata": exp.metadata,
        "operation": {"reference": exp.operation.reference, "code_hash": exp.operation.code_hash},
        "params": exp.params.spec(),
        "seeds": exp.seeds.spec(),
        "context_fingerprint": plan.context_fp,
        "context": context_to_json(exp.context),
        "total_runs": plan.total,
        "launched_runs": launched,
        "executor": repr(executor),
        "store": store.locator,
        "metalab_version": _core.__version__,
        "submitted_at": utc_now().isoformat(),
    }


def _progress_callback(progress: Progress | None) -> Any:
    if progress is None:
        return None

    def on_record(record: RunRecord) -> None:
        progress.record_finished(record.status.value, record.metrics)

    return on_record


def run(
    exp: Experiment,
    store: Any = None,
    executor: Executor | None = None,
    resume: bool = True,
    progress: bool | Progress | None = None,
    derived_metrics: Sequence[DerivedFn] | None = None,
    timeout: float | None = None,
    dry_run: bool = False,
    rerun: str | None = None,
) -> RunHandle:
    """Run an experiment and return a :class:`RunHandle` at once.

    Args:
        exp: the experiment.
        store: path, locator (``file://``, ``postgresql://``) or Store; default
            ``./runs/{exp.name}``.
        executor: where runs execute; default ``ThreadExecutor(max_workers=1)``
            (one background thread).
        resume: skip runs that already succeeded (failed and new ones run).
        progress: ``True`` or a :class:`metalab.Progress` for a live display.
        derived_metrics: functions computed on the worker after each successful run.
        timeout: per-run time limit in seconds (executors that can stop a run).
        dry_run: plan and report without executing (executors may print their plan).
        rerun: ``"stale"`` also re-executes finished runs whose stored results were
            computed by another version of the operation (or another metalab major
            version); by default they are reused and reported once on stderr.

    Raises:
        ExperimentError: ``exp`` is not an Experiment or an argument is invalid.
        ContextError: a context FilePath/DirPath is missing (before any run starts).
        LocatorError: the store locator is unknown or malformed.
        EncodingError: ``exp.metadata`` holds a value JSON cannot store (nothing written).
        UntrustedFileError: the FileStore's directory holds a service file that another
            user could have written (``{store}/services/postgres/service.json``).
    """
    if not isinstance(exp, Experiment):
        raise ExperimentError(f"run() needs a metalab.Experiment, got {type(exp).__name__}")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ExperimentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    rerun = check_rerun(rerun)
    fns = list(derived_metrics or [])
    for fn in fns:
        if not callable(fn):
            raise ExperimentError(f"derived metric {fn!r} is not callable")
    # Metadata can be edited after the Experiment was built: checked again before anything
    # is written (manifest and spec hold it as JSON); NumPy values become Python ones.
    exp.metadata = to_plain(exp.metadata, "metadata")
    target = create_store(store if store is not None else f"./runs/{exp.name}")
    target = _discover_service(target)
    runner = executor if executor is not None else ThreadExecutor(max_workers=1)
    if not isinstance(runner, Executor):
        raise ExperimentError(f"executor must be a metalab executor, got {runner!r}")
    plan = RunPlan(exp)
    run_ids = plan.run_ids
    decided = plan_resume(plan, target, resume, rerun)
    todo, skipped = decided.todo, decided.skipped
    display = make_progress(progress)
    if dry_run:
        return _dry_run(plan, target, runner, todo, skipped)
    if resume and todo:
        _clean_temporaries(target, [run_ids[t] for t in todo])
    manifest = _manifest(plan, target, runner, len(todo))
    # Which tasks this launch ran, with which code: how the next resume finds stale runs.
    manifest["launched_tasks"] = encode_tasks(decided.launched, plan.total)
    target.put_manifest(exp.experiment_id, manifest)
    _save_spec(exp, plan, target, runner)
    if display is not None:
        display.start(plan.total, skipped)
    job = Job(plan, target, todo, fns, timeout, _progress_callback(display))
    launch = runner.launch(job)
    pointer = {
        "experiment_id": exp.experiment_id,
        "executor": runner.name,
        "launched_at": utc_now().isoformat(),
        "driver_host": socket.gethostname(),
        "driver_pid": os.getpid(),
        **getattr(launch, "reconnect_info", {}),
    }
    try:
        target.put_blob(launch_key(exp.experiment_id), json.dumps(pointer).encode())
        target.put_blob(launch_key(), json.dumps(pointer).encode())
    except StoreError as exc:
        # The launch is already running: raising here would orphan it. Only reconnecting
        # from another process is lost; result() still reports the store's own failures.
        warnings.warn(
            f"metalab: could not save the launch pointer, so metalab.reconnect() will not "
            f"find this launch: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )
    return RunHandle(plan, target, launch, skipped, display)


def _save_spec(exp: Experiment, plan: RunPlan, store: Store, executor: Executor) -> None:
    """Store the worker spec (workers and reconnect rebuild the experiment from it).

    In-process executors need no spec, so an operation that closes over something
    unpicklable (a lock, an open connection) still runs there; only reconnect is lost.

    Raises:
        ExperimentError: the executor ships the experiment and it cannot be serialised.
        UnsafeLoadError: the executor ships the experiment and the signing key is unsafe.
    """
    try:
        spec = experiment_to_spec(exp)
    except Exception as exc:
        if executor.ships_experiment:
            raise ExperimentError(
                f"{executor!r} runs operations in other processes, but experiment "
                f"{exp.experiment_id} cannot be serialised for them: {type(exc).__name__}: "
                f"{exc}. Make the operation and context picklable (no locks, open files or "
                f"connections captured), or use ThreadExecutor"
            ) from exc
        return
    spec["context_fingerprint"] = plan.context_fp
    try:
        # Sealed: workers and reconnect refuse a spec this account did not write.
        blob = spec_to_bytes(spec, exp.experiment_id)
    except UnsafeLoadError as exc:
        if executor.ships_experiment:
            raise
        warnings.warn(f"no reconnect for this launch: {exc}", RuntimeWarning, stacklevel=3)
        return
    store.put_blob(spec_key(exp.experiment_id), blob)


def _dry_run(
    plan: RunPlan, store: Store, executor: Executor, todo: list[int], skipped: int
) -> RunHandle:
    describe = getattr(executor, "describe", None)
    if callable(describe):
        describe(plan, store, todo)
    else:
        print(
            f"dry run: {len(todo)} of {plan.total} runs to execute ({skipped} already done) "
            f"with {executor!r} into {store.locator}"
        )
    return RunHandle(plan, store, None, skipped)


def _clean_temporaries(store: Store, run_ids: list[str]) -> None:
    """Remove what killed writers of the runs about to re-run left behind (FileStore).

    Only where those runs write is searched, so the cost follows the work to redo.
    Cleaning is housekeeping: a failure is a warning, never a reason not to run.
    """
    from metalab.store.file import FileStore

    if not isinstance(store, FileStore):
        return
    try:
        sweep = store.clean_temporaries(run_ids)
    except OSError as exc:
        warnings.warn(f"could not clean stale temporaries: {exc}", RuntimeWarning, stacklevel=3)
        return
    if sweep.removed:
        print(
            f"metalab: removed {len(sweep.removed)} stale temporaries of killed writers "
            f"({sweep.bytes_freed} bytes) from {store.root}",
            file=sys.stderr,
        )


def _discover_service(store: Store) -> Store:
    """Swap a FileStore for the PostgreSQL service advertised in its directory, if any.

    Raises:
        UntrustedFileError: a service file is there that another user could have written
            (it would redirect the runs to their database); nothing has run yet.
    """
    from metalab.store.file import FileStore

    if not isinstance(store, FileStore):
        return store
    from metalab.service import discover_service

    discovered: Store | None = discover_service(store)
    return store if discovered is None else discovered
