"""Process-pool execution for CPU-bound operations.

Design, chosen for low per-run overhead and robustness:

* A launch starts ``max_workers`` long-lived worker processes. Each receives the
  experiment spec once (JSON from :func:`metalab.spec.experiment_to_spec`; the operation
  travels by value with cloudpickle when its module cannot be imported, e.g. a script's
  ``__main__`` or a notebook cell) plus the store locator, and rebuilds the experiment and
  the store itself — store objects are never pickled.
* The driver then feeds task indices in chunks. A worker runs its chunk in order with
  :func:`metalab.execution.execute_task` (which writes the record and marker) and answers
  each run with a small message (task index, status, metrics) so progress advances in
  completion order.
* Because chunks are processed in order, the driver always knows which task a worker is
  running. If the worker dies hard (segfault, ``os._exit``, SIGKILL/OOM) or exceeds the
  per-run timeout, only that run is recorded failed (:class:`WorkerCrashedError` /
  :class:`RunTimeoutError`); the rest of its chunk is re-queued and a replacement worker
  is started.
* With the spawn and forkserver start methods, multiprocessing normally re-executes the
  user's ``__main__`` script in every child, which breaks (or recursively launches) scripts
  without an ``if __name__ == "__main__"`` guard. Workers never need the user's main
  module — the operation arrives by value — so it is hidden while children start.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import multiprocessing
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
import time
import traceback
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from metalab.capture import output
from metalab.errors import ExecutorError, RunTimeoutError, StoreError, WorkerCrashedError
from metalab.execution import execute_task, failure_record, persist, worker_identity
from metalab.executors.base import Executor, Job, Launch, TallyingLaunch
from metalab.records import ErrorInfo, RunRecord, RunState
from metalab.spec import experiment_to_spec
from metalab.store.credentials import Credential, credentials_of

__all__ = ["ProcessExecutor"]

_START_METHODS = ("spawn", "fork", "forkserver")
# Successive worker deaths with no run finished in between before the launch gives up:
# a worker that cannot even start (broken environment) must not be respawned forever.
_MAX_BARREN_DEATHS = 3


# ---------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------
def _worker_main(conn: mpc.Connection, inherited: list[Any] | None = None) -> None:
    """Entry point of a worker process: set up once, then execute tasks as they come."""
    # A forked child holds copies of the driver's pipe ends; closing them lets the
    # worker see end-of-file when the driver goes away.
    for other in inherited or ():
        with contextlib.suppress(OSError):
            other.close()
    # Ctrl-C in a terminal reaches the whole process group; only the driver decides what
    # happens next (its exit kills the workers, and unfinished runs stay unrecorded so
    # resume re-runs them), so workers do not react to it themselves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # For the worker's life: each run's prints and warnings also go to its log.
        with output.installed():
            _worker_loop(conn)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        # The driver went away or the user pressed Ctrl-C: nothing left to report to.
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()


def _worker_loop(conn: mpc.Connection) -> None:
    from metalab.plan import RunPlan
    from metalab.spec import experiment_from_spec
    from metalab.store import credentials
    from metalab.store.locator import create_store

    # The store's passwords come first, over this private pipe (never argv or environ).
    _, handed_over = conn.recv()
    _, spec_text, locator, derived_blob, executor_name, label = conn.recv()
    try:
        credentials.install(handed_over)
        spec = json.loads(spec_text)
        experiment = experiment_from_spec(spec)
        plan = RunPlan(experiment, context_fp=spec["context_fingerprint"])
        store = create_store(locator)
        # A refused login stops here, before any run executes (a FallbackStore would
        # otherwise send every record to its fallback).
        credentials.verify_login(store)
        derived = cloudpickle.loads(derived_blob) if derived_blob else ()
    except BaseException as exc:  # reported to the driver, which stops
        conn.send(("init_error", type(exc).__name__, str(exc), traceback.format_exc()))
        return
    conn.send(("ready",))
    worker_id = worker_identity(executor_name, label)
    pending: collections.deque[int] = collections.deque()
    while True:
        # Read instructions between runs only, so a chunk never interrupts a run.
        if not pending or conn.poll():
            message = conn.recv()
            if message[0] == "tasks":
                pending.extend(message[1])
            elif message[0] == "stop":
                conn.send(("dropped", list(pending)))
                return
            continue
        task_index = pending.popleft()
        try:
            record = execute_task(
                plan,
                task_index,
                store,
                executor=executor_name,
                worker_id=worker_id,
                derived_metrics=derived,
            )
        except BaseException as exc:  # store failure: the driver stops
            conn.send(("fatal", task_index, type(exc).__name__, str(exc), traceback.format_exc()))
            return
        error = record.error
        conn.send(
            (
                "done",
                task_index,
                record.status.value,
                record.metrics,
                error.type if error else None,
                error.message if error else None,
            )
        )


# ---------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _main_module_hidden(active: bool) -> Iterator[None]:
    """Hide ``__main__`` so spawn/forkserver children do not re-run the user's script."""
    main = sys.modules.get("__main__")
    if not active or main is None:
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@dataclass
class _Worker:
    process: Any
    conn: mpc.Connection
    label: str
    outstanding: collections.deque[int] = field(default_factory=collections.deque)
    started_at: float | None = None
    counted_running: bool = False
    ready: bool = False
    stopping: bool = False
    dead: bool = False


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed: out of memory or by an operator?)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


_LIVE: weakref.WeakSet[_ProcessLaunch] = weakref.WeakSet()


@atexit.register
def _kill_live_workers() -> None:
    # Runs before multiprocessing's own exit hook (registered earlier), which would
    # otherwise wait forever for workers that are idle on their pipe.
    for launch in list(_LIVE):
        launch.shutdown()


class _ProcessLaunch(TallyingLaunch):
    """A launch driven by a dispatcher thread that owns the worker processes."""

    # The dataclass parent compares by value; launches are tracked by identity.
    __hash__ = object.__hash__

    def __init__(self, job: Job, executor: ProcessExecutor) -> None:
        super().__init__(job)
        self._executor = executor
        self._ctx: Any = multiprocessing.get_context(executor.mp_context)
        self._hide_main = executor.mp_context != "fork"
        self._timeout = job.timeout if job.timeout is not None else executor.timeout
        self._queue: collections.deque[int] = collections.deque(job.task_indices)
        total = len(job.task_indices)
        self._workers: list[_Worker] = []
        self._target = min(executor.max_workers, max(total, 1))
        self._chunk = executor.chunk_size or max(1, min(32, total // (self._target * 4) or 1))
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._spec_text = ""
        self._credentials: list[Credential] = []
        self._derived = b""
        self._serial = 0
        self._barren_deaths = 0
        self._cancel_handled = False
        self._cancel_requests = 0
        self._force_handled = False
        self._shutting_down = False

    # -- public -------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop scheduling; a second call also kills running runs (recorded cancelled)."""
        with self._lock:
            self._cancel_requests += 1
        super().cancel()
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"c")

    def shutdown(self) -> None:
        """Kill every worker now (interpreter exit)."""
        self._shutting_down = True
        super().cancel()
        for worker in list(self._workers):
            with contextlib.suppress(Exception):
                worker.process.kill()

    # -- lifecycle ----------------------------------------------------------------------
    def begin(self) -> None:
        """Serialise the experiment, start the first workers and the dispatcher thread."""
        job = self.job
        if not self._queue:
            self.mark_finished()
            return
        spec = experiment_to_spec(job.plan.experiment)
        spec["context_fingerprint"] = job.plan.context_fp
        self._spec_text = json.dumps(spec)
        self._credentials = credentials_of(job.store)
        self._derived = cloudpickle.dumps(list(job.derived_metrics)) if job.derived_metrics else b""
        for _ in range(self._target):
            self._spawn()
        _LIVE.add(self)
        threading.Thread(
            target=self._dispatch, daemon=True, name="metalab-process-dispatch"
        ).start()

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        label = f"p{self._serial}"
        self._serial += 1
        inherited = None
        if not self._hide_main:
            inherited = [parent, self._wake_r, self._wake_w, *(w.conn for w in self._workers)]
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, inherited),
            daemon=False,
            name=f"metalab-worker-{label}",
        )
        with _main_module_hidden(self._hide_main):
            process.start()
        child.close()
        # A child that died at once is noticed through its sentinel, not here.
        with contextlib.suppress(OSError):
            parent.send(("credentials", self._credentials))
            parent.send(
                (
                    "init",
                    self._spec_text,
                    self.job.store.locator,
                    self._derived,
                    self._executor.name,
                    label,
                )
            )
        self._workers.append(_Worker(process, parent, label))

    def _dispatch(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by RunHandle.result()
            with self._lock:
                self.errors.append(exc)
            self.shutdown()
        finally:
            self._finish()

    def _finish(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
            with contextlib.suppress(OSError):
                worker.conn.close()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        self._workers.clear()
        leftover = len(self._queue)
        self._queue.clear()
        if leftover:
            self.skipped_by_cancel(leftover)
        _LIVE.discard(self)
        self.mark_finished()

    # -- the dispatcher loop ------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self.is_cancelled and not self._cancel_handled:
                self._handle_cancel()
            if self._cancel_requests > 1 and not self._force_handled:
                self._force_cancel()
            if not self.is_cancelled:
                self._feed()
            busy = [w for w in self._workers if w.outstanding or w.stopping]
            if not busy and (not self._queue or self.is_cancelled):
                return
            waitables: list[Any] = [self._wake_r]
            for worker in self._workers:
                waitables += [worker.conn, worker.process.sentinel]
            ready = mpc.wait(waitables, timeout=self._wait_time())
            if self._wake_r in ready:
                with contextlib.suppress(EOFError, OSError):
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
            for worker in list(self._workers):
                if worker.conn in ready:
                    self._drain(worker)
                if not worker.dead and worker.process.sentinel in ready:
                    self._drain(worker)
                    self._on_death(worker, None)
            self._enforce_timeout()

    def _wait_time(self) -> float | None:
        if self._timeout is None:
            return None
        now = time.monotonic()
        deadlines = [
            w.started_at + self._timeout
            for w in self._workers
            if w.outstanding and w.started_at is not None
        ]
        return max(min(deadlines) - now, 0.0) if deadlines else None

    def _feed(self) -> None:
        while len(self._workers) < self._target and self._queue:
            self._spawn()
        low = self._chunk // 2
        for worker in self._workers:
            if worker.dead or worker.stopping or not self._queue:
                continue
            if len(worker.outstanding) > low:
                continue
            chunk = [self._queue.popleft() for _ in range(min(self._chunk, len(self._queue)))]
            try:
                worker.conn.send(("tasks", chunk))
            except OSError:
                self._queue.extendleft(reversed(chunk))
                continue
            if not worker.outstanding and worker.ready:
                self._begin_next(worker)
            worker.outstanding.extend(chunk)

    def _begin_next(self, worker: _Worker) -> None:
        worker.started_at = time.monotonic()
        worker.counted_running = True
        self.started()

    def _handle_cancel(self) -> None:
        self._cancel_handled = True
        dropped = len(self._queue)
        self._queue.clear()
        if dropped:
            self.skipped_by_cancel(dropped)
        for worker in self._workers:
            if worker.dead:
                continue
            worker.stopping = True
            try:
                worker.conn.send(("stop",))
            except OSError:
                continue

    def _force_cancel(self) -> None:
        self._force_handled = True
        for worker in list(self._workers):
            if worker.dead or not worker.outstanding:
                continue
            worker.process.kill()
            worker.process.join(timeout=5)
            self._drain(worker)
            reason = KeyboardInterrupt("run stopped by a second handle.cancel()")
            self._on_death(worker, reason, RunState.CANCELLED)

    def _drain(self, worker: _Worker) -> None:
        while not worker.dead:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                return
            self._on_message(worker, message)

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            # The timeout clock starts now: interpreter start-up is not the run's time.
            worker.ready = True
            if worker.outstanding and not worker.stopping:
                self._begin_next(worker)
        elif kind == "done":
            _, task_index, status, metrics, err_type, err_message = message
            self._barren_deaths = 0
            if worker.outstanding and worker.outstanding[0] == task_index:
                worker.outstanding.popleft()
            if not worker.counted_running:
                self.started()
            worker.counted_running = False
            worker.started_at = None
            record = self._summary(task_index, status, metrics, err_type, err_message)
            if worker.outstanding and not worker.stopping:
                self._begin_next(worker)
            self.finished(record)
        elif kind == "dropped":
            dropped = [t for t in message[1] if t in worker.outstanding]
            worker.outstanding.clear()
            worker.stopping = False
            if worker.counted_running and dropped:
                # Counted as running when its predecessor finished, but never started.
                self._uncount(worker)
            if dropped:
                self.skipped_by_cancel(len(dropped))
        elif kind in ("fatal", "init_error"):
            self._on_fatal(worker, message)

    def _summary(
        self,
        task_index: int,
        status: str,
        metrics: dict[str, Any],
        err_type: str | None,
        err_message: str | None,
    ) -> RunRecord:
        # A light copy of the stored record, enough for counts and progress displays.
        plan = self.job.plan
        task = plan.task(task_index)
        return RunRecord(
            run_id=task.run_id,
            experiment_id=plan.experiment_id,
            status=RunState(status),
            context_fingerprint=plan.context_fp,
            params_fingerprint=task.params_fp,
            seed_fingerprint=task.seed_fp,
            params=task.params,
            task_index=task_index,
            replicate=task.replicate,
            metrics=metrics,
            error=ErrorInfo(err_type, err_message or "") if err_type else None,
        )

    def _on_fatal(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        if message[0] == "init_error":
            _, name, text, tb = message
            error: BaseException = ExecutorError(
                f"worker {worker.label} could not rebuild the experiment or open its store: "
                f"{name}: {text}\n{tb}"
            )
        else:
            _, task_index, name, text, tb = message
            error = StoreError(f"worker {worker.label}, task {task_index}: {name}: {text}\n{tb}")
        if not worker.counted_running:
            self.started()
        worker.counted_running = False
        self.fatal(error)
        if message[0] == "fatal" and worker.outstanding:
            # That run is not recorded (the store failed): resume will retry it.
            worker.outstanding.popleft()
        # Work the worker still held goes back so cancel accounting counts it.
        self._queue.extendleft(reversed(worker.outstanding))
        worker.outstanding.clear()
        self._retire(worker)
        self.cancel()

    def _retire(self, worker: _Worker) -> None:
        worker.dead = True
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        if worker in self._workers:
            self._workers.remove(worker)

    def _uncount(self, worker: _Worker) -> None:
        if worker.counted_running:
            with self._lock:
                self._counts.running -= 1
        worker.counted_running = False
        worker.started_at = None

    def _requeue(self, worker: _Worker) -> None:
        self._retire(worker)
        self._uncount(worker)
        self._queue.extendleft(reversed(worker.outstanding))
        worker.outstanding.clear()

    def _on_death(
        self, worker: _Worker, reason: BaseException | None, state: RunState = RunState.FAILED
    ) -> None:
        """A worker died or was killed: fail its current run, re-queue the rest."""
        if worker.dead:
            return
        self._retire(worker)
        if self._shutting_down:
            # Killed by us on the way out: unfinished runs stay unrecorded, so resume
            # simply runs them again rather than reporting crashes that did not happen.
            return
        if not worker.ready:
            # It died while starting up: no run of its chunk began, so none is blamed.
            self._uncount(worker)
            self._queue.extendleft(reversed(worker.outstanding))
            worker.outstanding.clear()
        if not worker.outstanding:
            if not worker.stopping and worker.process.exitcode != 0:
                self._barren_deaths += 1
                if self._barren_deaths > _MAX_BARREN_DEATHS:
                    with self._lock:
                        self.errors.append(
                            ExecutorError(
                                f"worker processes keep dying before running anything "
                                f"(last one {_describe_exit(worker.process.exitcode)})"
                            )
                        )
                    self.cancel()
            return
        task_index = worker.outstanding.popleft()
        rest = list(worker.outstanding)
        worker.outstanding.clear()
        if reason is None:
            reason = WorkerCrashedError(
                f"worker process {worker.process.pid} {_describe_exit(worker.process.exitcode)} "
                f"while running task {task_index}; the other runs continue"
            )
        if not worker.counted_running:
            self.started()
        worker.counted_running = False
        record = self._fail(task_index, reason, worker, state)
        if rest:
            if self.is_cancelled:
                self.skipped_by_cancel(len(rest))
            else:
                self._queue.extendleft(reversed(rest))
        if record is None:
            return
        self.finished(record)

    def _fail(
        self, task_index: int, reason: BaseException, worker: _Worker, state: RunState
    ) -> RunRecord | None:
        plan, store = self.job.plan, self.job.store
        task = plan.task(task_index)
        # The worker may have persisted the run just before dying; that record stands.
        existing = store.get_record(task.run_id) if store.completed([task.run_id])[0] else None
        if existing is not None:
            return existing
        worker_id = worker_identity(self._executor.name, worker.label)
        record = failure_record(plan, task, reason, self._executor.name, worker_id, state)
        persist(store, record)
        return record

    def _enforce_timeout(self) -> None:
        if self._timeout is None:
            return
        for worker in list(self._workers):
            # A result already sent means the run finished in time: read it first.
            self._drain(worker)
            if worker.dead or not worker.outstanding or worker.started_at is None:
                continue
            if time.monotonic() - worker.started_at < self._timeout:
                continue
            task_index = worker.outstanding[0]
            worker.process.kill()
            worker.process.join(timeout=5)
            self._drain(worker)
            if worker.outstanding and worker.outstanding[0] == task_index:
                self._on_death(
                    worker,
                    RunTimeoutError(
                        f"task {task_index} exceeded the per-run timeout of {self._timeout:g}s; "
                        f"its worker process was killed"
                    ),
                )
            else:
                # It finished at the last moment; the run killed instead had just begun
                # and is blameless, so it is re-queued rather than failed.
                self._requeue(worker)


class ProcessExecutor(Executor):
    """Run tasks on a pool of ``max_workers`` long-lived worker processes.

    Args:
        max_workers: number of worker processes (default: CPU count).
        timeout: per-run time limit in seconds; a run over it is killed and recorded
            failed with :class:`~metalab.errors.RunTimeoutError`. ``metalab.run(...,
            timeout=...)`` takes precedence.
        mp_context: start method, ``"spawn"`` (default, safe everywhere), ``"fork"`` or
            ``"forkserver"``.
        chunk_size: task indices sent to a worker at a time (default: automatic).

    ``handle.cancel()`` stops scheduling: queued runs are counted cancelled and running
    ones finish. Calling it a second time also kills the running ones, which are then
    recorded ``cancelled``.

    Raises:
        ExecutorError: an argument is invalid.
    """

    name = "process"

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        timeout: float | None = None,
        mp_context: str = "spawn",
        chunk_size: int | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ExecutorError(f"max_workers must be a positive int, got {max_workers!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ExecutorError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if mp_context not in _START_METHODS:
            raise ExecutorError(
                f"mp_context must be one of {', '.join(_START_METHODS)}, got {mp_context!r}"
            )
        if mp_context not in multiprocessing.get_all_start_methods():
            raise ExecutorError(f"start method {mp_context!r} is not available on this platform")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ExecutorError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.max_workers = max_workers
        self.timeout = timeout
        self.mp_context = mp_context
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        extra = f", timeout={self.timeout!r}" if self.timeout is not None else ""
        return (
            f"ProcessExecutor(max_workers={self.max_workers}, "
            f"mp_context={self.mp_context!r}{extra})"
        )

    def launch(self, job: Job) -> Launch:
        """Start the worker processes and return at once."""
        launch = _ProcessLaunch(job, self)
        launch.begin()
        return launch
