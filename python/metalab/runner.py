"""``metalab.run``: plan an experiment, skip what is done, launch the rest, hand back a handle."""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from metalab import _core
from metalab.context import context_to_json
from metalab.errors import ExperimentError, StoreError, UnsafeLoadError
from metalab.execution import DerivedFn
from metalab.executors.base import Executor, Job
from metalab.executors.thread import ThreadExecutor
from metalab.experiment import Experiment
from metalab.handle import RunHandle, RunStatus
from metalab.identity import to_plain
from metalab.keys import launch_key, spec_key
from metalab.plan import RunPlan
from metalab.progress import Progress, make_progress
from metalab.records import RunRecord, utc_now
from metalab.resume import check_rerun, plan_resume
from metalab.spec import experiment_to_spec, spec_to_bytes
from metalab.staleness import encode_tasks
from metalab.store.base import Store
from metalab.store.locator import create_store

__all__ = ["RunHandle", "RunStatus", "launch_key", "run", "spec_key"]


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
    # Run IDs are computed where needed: a resubmission the store's done proof answers
    # needs none (see metalab.resume).
    decided = plan_resume(plan, target, resume, rerun, write=not dry_run)
    todo, skipped = decided.todo, decided.skipped
    display = make_progress(progress)
    if dry_run:
        return _dry_run(plan, target, runner, todo, skipped)
    if resume and todo:
        run_ids = plan.run_ids
        _clean_temporaries(target, [run_ids[t] for t in todo])
    manifest = _manifest(plan, target, runner, len(todo))
    # Which tasks this launch ran, with which code: how the next resume finds stale runs.
    manifest["launched_tasks"] = encode_tasks(decided.launched, plan.total)
    target.put_manifest(exp.experiment_id, manifest)
    _save_spec(exp, plan, target, runner)
    if display is not None:
        display.start(plan.total, skipped)
    job = Job(plan, target, todo, fns, timeout, _progress_callback(display))
    # Runs done before are re-executed on purpose here: their claims must not refuse them.
    job.redo_done = not resume or rerun == "stale"
    launch = runner.launch(job)
    pointer = {
        "experiment_id": exp.experiment_id,
        "executor": runner.name,
        "launched_at": utc_now().isoformat(),
        "driver_host": socket.gethostname(),
        "driver_pid": os.getpid(),
        **launch.reconnect_info,
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
    executor.describe(plan, store, todo)
    return RunHandle(plan, store, None, skipped)


def _clean_temporaries(store: Store, run_ids: list[str]) -> None:
    """Remove what killed writers of the runs about to re-run left behind (FileStore).

    Only where those runs write is searched, so the cost follows the work to redo.
    Cleaning is housekeeping: a failure is a warning, never a reason not to run.
    """
    try:
        sweep = store.clean_temporaries(run_ids)
    except OSError as exc:
        warnings.warn(f"could not clean stale temporaries: {exc}", RuntimeWarning, stacklevel=3)
        return
    if sweep.removed:
        print(
            f"metalab: removed {len(sweep.removed)} stale temporaries of killed writers "
            f"({sweep.bytes_freed} bytes) from {store.directory}",
            file=sys.stderr,
        )


def _discover_service(store: Store) -> Store:
    """Swap a FileStore for the PostgreSQL service advertised in its directory, if any.

    Raises:
        UntrustedFileError: a service file is there that another user could have written
            (it would redirect the runs to their database); nothing has run yet.
    """
    if store.directory is None:
        return store  # only a directory can advertise a service
    from metalab.service import discover_service

    discovered: Store | None = discover_service(store)
    return store if discovered is None else discovered
