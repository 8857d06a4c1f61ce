"""Execute one task: run the operation, capture its output, persist record then marker.

This is the only place a run is executed; every executor (thread, process, SLURM worker)
calls :func:`execute_task`, so records look the same whichever executor ran them. The
run's log gets what the operation printed or warned (:mod:`metalab.capture.output`, once
the executor installed it) and, when it fails, its traceback.

A failed store write (record, marker, artifact, log, derived metrics) is never the run's
failure: it raises :class:`~metalab.errors.StoreError` out of :func:`execute_task`, the
run is left unrecorded (resume retries it) and every executor stops its launch on it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from metalab import _core
from metalab.capture import Capture, output
from metalab.capture.capture import store_write
from metalab.context import fresh_copy
from metalab.derived import apply_derived
from metalab.operation import Runtime
from metalab.plan import RunPlan, TaskIdentity
from metalab.records import (
    ErrorInfo,
    FailureReason,
    Provenance,
    RunRecord,
    RunState,
    utc_now,
)
from metalab.store.base import Store
from metalab.store.capabilities import RunWriter

__all__ = [
    "DerivedFn",
    "RunInterrupted",
    "base_record",
    "execute_task",
    "failure_record",
    "reason_of",
    "worker_identity",
]

DerivedFn = Callable[[Any], dict[str, Any]]

# socket.gethostname() is the uname nodename on POSIX: read it without importing socket
# (~3 ms of every SLURM array task's start-up).
_HOST = os.uname().nodename
# What platform.python_version() returns (the first word of sys.version), without
# importing platform (~4 ms of every SLURM array task's start-up).
_PYTHON_VERSION = sys.version.split()[0]


class RunInterrupted(KeyboardInterrupt):
    """An interrupt that knows why it came (the SLURM worker's signal handlers raise it).

    Args:
        message: recorded as the run's error message.
        reason: recorded as the run's reason; a ``timeout`` makes the run ``failed`` (its
            limit was too short, a retry may give it more), anything else ``cancelled``.
    """

    def __init__(self, message: str, reason: FailureReason) -> None:
        super().__init__(message)
        self.reason = reason


def reason_of(error: BaseException, state: RunState = RunState.FAILED) -> FailureReason:
    """The reason kind of a run that ended with ``error`` in ``state``."""
    from metalab.errors import RunTimeoutError, WorkerCrashedError

    if isinstance(error, RunInterrupted):
        return error.reason
    if isinstance(error, RunTimeoutError):
        return FailureReason.TIMEOUT
    if isinstance(error, MemoryError):
        return FailureReason.OUT_OF_MEMORY
    if state is RunState.CANCELLED or isinstance(error, KeyboardInterrupt):
        return FailureReason.CANCELLED
    if isinstance(error, WorkerCrashedError):
        return FailureReason.CRASHED
    return FailureReason.EXCEPTION


def worker_identity(detail: str = "") -> str:
    """Return ``host:pid[:detail]`` naming the process (and thread/task) running a run."""
    suffix = f":{detail}" if detail else ""
    return f"{_HOST}:{os.getpid()}{suffix}"


def _provenance(plan: RunPlan, executor: str, worker_id: str) -> Provenance:
    return Provenance(
        code_hash=plan.experiment.operation.code_hash,
        operation=plan.experiment.operation.reference,
        python=_PYTHON_VERSION,
        metalab=_core.__version__,
        host=_HOST,
        pid=os.getpid(),
        executor=executor,
        worker_id=worker_id,
    )


def base_record(plan: RunPlan, task: TaskIdentity, state: RunState) -> RunRecord:
    """The record of ``task`` in ``state`` with its identity filled in, nothing measured yet."""
    return RunRecord(
        run_id=task.run_id,
        experiment_id=plan.experiment_id,
        status=state,
        context_fingerprint=plan.context_fp,
        params_fingerprint=task.params_fp,
        seed_fingerprint=task.seed_fp,
        params=task.params,
        task_index=task.task_index,
        replicate=task.replicate,
    )


def failure_record(
    plan: RunPlan,
    task: TaskIdentity,
    error: BaseException,
    executor: str,
    worker_id: str,
    state: RunState = RunState.FAILED,
    reason: FailureReason | None = None,
) -> RunRecord:
    """Build the record of a run that failed outside the operation (crash, timeout).

    ``reason`` defaults to what the error says (:func:`reason_of`).
    """
    record = base_record(plan, task, state)
    record.started_at = record.finished_at = utc_now()
    record.error = ErrorInfo(type(error).__name__, str(error), "")
    record.reason = reason if reason is not None else reason_of(error, state)
    record.provenance = _provenance(plan, executor, worker_id)
    return record


def persist(store: RunWriter, record: RunRecord) -> None:
    """Write the record, then its marker (the marker only vouches for a durable record).

    Raises:
        StoreError: either write failed (an ``OSError`` such as a full disk included).
    """
    with store_write("record", record.run_id, store):
        store.put_record(record)
    with store_write(f"{record.status.value} marker", record.run_id, store):
        store.mark(record.run_id, record.status)


def execute_task(
    plan: RunPlan,
    task_index: int,
    store: Store,
    *,
    executor: str,
    worker_id: str,
    derived_metrics: Sequence[DerivedFn] = (),
) -> RunRecord:
    """Run task ``task_index`` of ``plan`` and persist its record.

    An exception raised by the operation is recorded (type, message, traceback) and the
    record is returned with status ``failed``; it is never re-raised.

    Raises:
        StoreError: the store failed to write anything of this run (an artifact or log
            line while the operation ran, even if the operation caught that error, or
            the record, marker or derived metrics after). Nothing of the run is recorded
            as done, so resume retries it; executors stop the launch.
    """
    task = plan.task(task_index)
    exp = plan.experiment
    record = base_record(plan, task, RunState.RUNNING)
    capture = Capture(store, task.run_id, worker_id)
    runtime = Runtime(
        run_id=task.run_id,
        experiment_id=plan.experiment_id,
        task_index=task_index,
        replicate=task.replicate,
        worker_id=worker_id,
        metadata=fresh_copy(exp.metadata),
    )
    record.started_at = utc_now()
    try:
        # What the operation prints or warns goes to its log too (when the executor
        # installed the capture: metalab.capture.output).
        with output.routed(capture):
            exp.operation.invoke(
                context=fresh_copy(exp.context),
                params=task.params.copy(),
                seeds=plan.seed_bundle(task.replicate),
                runtime=runtime,
                capture=capture,
            )
        record.status = RunState.SUCCESS
    except RunInterrupted as exc:
        # A timeout is a failure (more time may fix it); preemption or scancel is not.
        timeout = exc.reason is FailureReason.TIMEOUT
        record.status = RunState.FAILED if timeout else RunState.CANCELLED
        record.reason = exc.reason
        record.error = ErrorInfo(type(exc).__name__, str(exc), "")
        capture.failure(f"{type(exc).__name__}: {exc}\n")
    except KeyboardInterrupt:
        record.status = RunState.CANCELLED
        record.reason = FailureReason.CANCELLED
        record.error = ErrorInfo("KeyboardInterrupt", "run interrupted", "")
    except BaseException as exc:
        record.status = RunState.FAILED
        record.reason = reason_of(exc)
        import traceback  # here: most runs never fail, and it brings textwrap along

        text = "".join(traceback.format_exception(exc))
        record.error = ErrorInfo(type(exc).__name__, str(exc), text)
        capture.failure(text)
    finally:
        capture.close()
    if record.status is RunState.SUCCESS:
        # Before the record: a run recorded as done never leaves a checkpoint behind
        # that a forced re-execution (rerun="stale") would wrongly resume from.
        capture.clear_checkpoint()
    if capture.store_failure is not None:
        # The operation saw (and may have swallowed) a failed artifact or log write:
        # the run's output is incomplete through no fault of its own.
        raise capture.store_failure
    record.finished_at = utc_now()
    record.metrics = capture.metrics
    record.metric_series = capture.series
    record.artifacts = list(capture.artifacts.values())
    record.provenance = _provenance(plan, executor, worker_id)
    if record.status is RunState.SUCCESS and derived_metrics:
        values, errors = apply_derived(record, store, derived_metrics)
        record.derived_errors = errors
        if values:
            with store_write("derived metrics", record.run_id, store):
                store.put_derived(record.run_id, values)
    persist(store, record)
    if record.status is RunState.CANCELLED:
        sys.stderr.flush()
    return record
