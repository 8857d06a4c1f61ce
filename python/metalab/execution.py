"""Execute one task: run the operation, capture its output, persist record then marker.

This is the only place a run is executed; every executor (thread, process, SLURM worker)
calls :func:`execute_task`, so records look the same whichever executor ran them.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from metalab import _core
from metalab.capture import Capture
from metalab.context import fresh_copy
from metalab.derived import apply_derived
from metalab.operation import Runtime
from metalab.plan import RunPlan, TaskIdentity
from metalab.records import ErrorInfo, Provenance, RunRecord, RunState, utc_now
from metalab.store.base import Store

__all__ = ["DerivedFn", "execute_task", "failure_record", "worker_identity"]

DerivedFn = Callable[[Any], dict[str, Any]]

_HOST = socket.gethostname()


def worker_identity(executor: str, detail: str = "") -> str:
    """Return ``host:pid[:detail]`` naming the process (and thread/task) running a run."""
    suffix = f":{detail}" if detail else ""
    return f"{_HOST}:{os.getpid()}{suffix}"


def _provenance(plan: RunPlan, executor: str, worker_id: str) -> Provenance:
    return Provenance(
        code_hash=plan.experiment.operation.code_hash,
        operation=plan.experiment.operation.reference,
        python=platform.python_version(),
        metalab=_core.__version__,
        host=_HOST,
        pid=os.getpid(),
        executor=executor,
        worker_id=worker_id,
    )


def _base_record(plan: RunPlan, task: TaskIdentity, state: RunState) -> RunRecord:
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
) -> RunRecord:
    """Build the record of a run that failed outside the operation (crash, timeout)."""
    record = _base_record(plan, task, state)
    record.started_at = record.finished_at = utc_now()
    record.error = ErrorInfo(type(error).__name__, str(error), "")
    record.provenance = _provenance(plan, executor, worker_id)
    return record


def persist(store: Store, record: RunRecord) -> None:
    """Write the record, then its marker (the marker only vouches for a durable record)."""
    store.put_record(record)
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
    record is returned with status ``failed``; it is never re-raised. Errors writing to the
    store propagate: the run is then not marked done and will be retried on resume.
    """
    task = plan.task(task_index)
    exp = plan.experiment
    record = _base_record(plan, task, RunState.RUNNING)
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
        exp.operation.invoke(
            context=fresh_copy(exp.context),
            params=task.params.copy(),
            seeds=plan.seed_bundle(task.replicate),
            runtime=runtime,
            capture=capture,
        )
        record.status = RunState.SUCCESS
    except KeyboardInterrupt:
        record.status = RunState.CANCELLED
        record.error = ErrorInfo("KeyboardInterrupt", "run interrupted", "")
    except BaseException as exc:
        record.status = RunState.FAILED
        record.error = ErrorInfo(
            type(exc).__name__, str(exc), "".join(traceback.format_exception(exc))
        )
    finally:
        capture.close()
    record.finished_at = utc_now()
    record.metrics = capture.metrics
    record.metric_series = capture.series
    record.artifacts = list(capture.artifacts.values())
    record.provenance = _provenance(plan, executor, worker_id)
    if record.status is RunState.SUCCESS and derived_metrics:
        values, errors = apply_derived(record, store, derived_metrics)
        record.derived_errors = errors
        if values:
            store.put_derived(record.run_id, values)
    persist(store, record)
    if record.status is RunState.CANCELLED:
        sys.stderr.flush()
    return record
