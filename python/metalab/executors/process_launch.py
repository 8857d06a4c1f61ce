"""The driver of a ProcessExecutor launch: a dispatcher thread owning the worker processes.

It starts the workers (:mod:`metalab.executors.process_worker`), feeds them chunks of task
indices, reads their typed reports (:mod:`metalab.executors.process_protocol`) and keeps
each one's :class:`~metalab.executors.process_state.WorkerState`. Since a worker runs its
chunk in order, its current run is always the first of its ``outstanding`` tasks: a hard
death or a timeout fails that run only, and the rest is re-queued for a replacement.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import multiprocessing
import multiprocessing.connection as mpc
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from metalab.errors import ExecutorError, RunTimeoutError, StoreError, WorkerCrashedError
from metalab.execution import base_record, failure_record, persist, worker_identity
from metalab.executors.base import Job, TallyingLaunch
from metalab.executors.process_protocol import (
    Credentials,
    Done,
    Dropped,
    Fatal,
    Init,
    InitError,
    Ready,
    Stop,
    Tasks,
    ToDriver,
    receive_report,
)
from metalab.executors.process_state import (
    WorkerPhase,
    WorkerState,
    describe_exit,
    main_module_hidden,
)
from metalab.records import ErrorInfo, RunRecord, RunState, StoredState
from metalab.spec import experiment_to_spec
from metalab.store.credentials import Credential, credentials_of

if TYPE_CHECKING:
    from metalab.executors.process import ProcessExecutor

__all__ = ["ProcessLaunch", "WorkerEntry"]

WorkerEntry = Callable[[mpc.Connection, "list[Any] | None"], None]
"""A worker process's entry point: its pipe end, and the driver's ends a fork inherited."""

# Successive worker deaths with no run finished in between before the launch gives up:
# a worker that cannot even start (broken environment) must not be respawned forever.
_MAX_BARREN_DEATHS = 3

_LIVE: weakref.WeakSet[ProcessLaunch] = weakref.WeakSet()


@atexit.register
def _kill_live_workers() -> None:
    # Runs before multiprocessing's own exit hook (registered earlier), which would
    # otherwise wait forever for workers that are idle on their pipe.
    for launch in list(_LIVE):
        launch.shutdown()


class ProcessLaunch(TallyingLaunch):
    """A launch driven by a dispatcher thread that owns the worker processes."""

    # The dataclass parent compares by value; launches are tracked by identity.
    __hash__ = object.__hash__

    def __init__(self, job: Job, executor: ProcessExecutor, entry: WorkerEntry) -> None:
        super().__init__(job)
        self._executor = executor
        self._entry = entry
        self._ctx: Any = multiprocessing.get_context(executor.mp_context)
        self._hide_main = executor.mp_context != "fork"
        self._timeout = job.timeout if job.timeout is not None else executor.timeout
        # Tasks whose runs this launch has claimed (claimed.py), ready for a worker.
        self._queue: collections.deque[int] = collections.deque()
        self._claims = self.claimed_tasks()
        total = len(job.task_indices)
        self._workers: list[WorkerState] = []
        self._target = min(executor.max_workers, max(total, 1))
        self._chunk = executor.chunk_size or max(1, min(32, total // (self._target * 4) or 1))
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._spec_text = ""
        self._credentials: tuple[Credential, ...] = ()
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
        if not job.task_indices:
            self.mark_finished()
            return
        spec = experiment_to_spec(job.plan.experiment)
        spec["context_fingerprint"] = job.plan.context_fp
        self._spec_text = json.dumps(spec)
        self._credentials = tuple(credentials_of(job.store))
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
            target=self._entry,
            args=(child, inherited),
            daemon=False,
            name=f"metalab-worker-{label}",
        )
        with main_module_hidden(self._hide_main):
            process.start()
        child.close()
        init = Init(
            spec_text=self._spec_text,
            locator=self.job.store.locator,
            derived_blob=self._derived,
            executor_name=self._executor.name,
            label=label,
        )
        # A child that died at once is noticed through its sentinel, not here.
        with contextlib.suppress(OSError):
            parent.send(Credentials(self._credentials))
            parent.send(init)
        self._workers.append(WorkerState(process, parent, label))

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
                worker.conn.send(Stop())
            with contextlib.suppress(OSError):
                worker.conn.close()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        self._workers.clear()
        leftover = len(self._queue) + self._claims.drain()
        self._queue.clear()
        if leftover:
            self.skipped_by_cancel(leftover)
        self._claims.close()  # what a stopped launch still held
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
                held = sum(len(w.outstanding) for w in self._workers) + len(self._queue)
                self._queue.extend(self._claims.take_many(self._chunk * self._target - held))
                self._feed()
            busy = [w for w in self._workers if w.outstanding or w.phase.stopping]
            if not busy and ((not self._queue and self._claims.exhausted) or self.is_cancelled):
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
        polling = None if self.is_cancelled else self._claims.next_poll_in()
        if self._timeout is None:
            return polling
        now = time.monotonic()
        deadlines = [
            w.running_since + self._timeout
            for w in self._workers
            if w.outstanding and w.running_since is not None
        ]
        limit = max(min(deadlines) - now, 0.0) if deadlines else None
        return min((t for t in (polling, limit) if t is not None), default=None)

    def _feed(self) -> None:
        while len(self._workers) < self._target and self._queue:
            self._spawn()
        low = self._chunk // 2
        for worker in self._workers:
            if not worker.takes_work or not self._queue:
                continue
            if len(worker.outstanding) > low:
                continue
            chunk = tuple(self._queue.popleft() for _ in range(min(self._chunk, len(self._queue))))
            try:
                worker.conn.send(Tasks(chunk))
            except OSError:
                self._queue.extendleft(reversed(chunk))
                continue
            if not worker.outstanding and worker.phase.ready:
                self._begin_next(worker)
            worker.outstanding.extend(chunk)

    # -- counting a worker's current run ------------------------------------------------
    def _begin_next(self, worker: WorkerState) -> None:
        """The worker's next held task begins now: count it running, start its clock."""
        worker.running_since = time.monotonic()
        self.started()

    def _settle_current(self, worker: WorkerState) -> None:
        """Its current run ends (finished, failed, fatal): it must have been counted.

        ``finished``/``fatal`` take one off the running count, so a run that ended before
        the driver counted it (it began after a stop was sent, say) is counted now.
        """
        if worker.running_since is None:
            self.started()
        worker.running_since = None

    def _uncount(self, worker: WorkerState) -> None:
        """Its current run never really began: take it off the running count."""
        if worker.running_since is not None:
            with self._lock:
                self._counts.running -= 1
        worker.running_since = None

    # -- cancelling ---------------------------------------------------------------------
    def _handle_cancel(self) -> None:
        self._cancel_handled = True
        dropped = len(self._queue) + self._claims.drain()
        self._queue.clear()
        if dropped:
            self.skipped_by_cancel(dropped)
        for worker in self._workers:
            if worker.dead:
                continue
            worker.stop_sent()
            try:
                worker.conn.send(Stop())
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

    # -- messages from workers ----------------------------------------------------------
    def _drain(self, worker: WorkerState) -> None:
        while not worker.dead:
            try:
                if not worker.conn.poll():
                    return
                message = receive_report(worker.conn)
            except (EOFError, OSError):
                return
            self._on_message(worker, message)

    def _on_message(self, worker: WorkerState, message: ToDriver) -> None:
        match message:
            case Ready():
                # The timeout clock starts now: interpreter start-up is not the run's time.
                worker.became_ready()
                if worker.outstanding and not worker.phase.stopping:
                    self._begin_next(worker)
            case Done():
                self._on_done(worker, message)
            case Dropped(task_indices=indices):
                dropped = [t for t in indices if t in worker.outstanding]
                worker.outstanding.clear()
                worker.phase = WorkerPhase.STOPPED
                if dropped:
                    # Counted as running when its predecessor finished, but never started.
                    self._uncount(worker)
                    self.skipped_by_cancel(len(dropped))
            case InitError() | Fatal():
                self._on_fatal(worker, message)

    def _on_done(self, worker: WorkerState, done: Done) -> None:
        self._barren_deaths = 0
        if worker.outstanding and worker.outstanding[0] == done.task_index:
            worker.outstanding.popleft()
        self._settle_current(worker)
        record = self._summary(done)
        self._claims.done(done.task_index)
        if worker.outstanding and not worker.phase.stopping:
            self._begin_next(worker)
        self.finished(record)

    def _summary(self, done: Done) -> RunRecord:
        # A light copy of the stored record, enough for counts and progress displays.
        plan = self.job.plan
        record = base_record(plan, plan.task(done.task_index), RunState(done.status))
        record.metrics = done.metrics
        if done.error_type:
            record.error = ErrorInfo(done.error_type, done.error_message or "")
        return record

    def _on_fatal(self, worker: WorkerState, message: InitError | Fatal) -> None:
        error: BaseException
        if isinstance(message, InitError):
            error = ExecutorError(
                f"worker {worker.label} could not rebuild the experiment or open its store: "
                f"{message.error_type}: {message.message}\n{message.traceback}"
            )
        else:
            error = StoreError(
                f"worker {worker.label}, task {message.task_index}: "
                f"{message.error_type}: {message.message}\n{message.traceback}",
                locator=self.job.store.locator,
            )
        self._settle_current(worker)
        self.fatal(error)
        if isinstance(message, Fatal) and worker.outstanding:
            # That run is not recorded (the store failed): resume will retry it.
            worker.outstanding.popleft()
        # Work the worker still held goes back so cancel accounting counts it.
        self._queue.extendleft(reversed(worker.outstanding))
        worker.outstanding.clear()
        self._retire(worker)
        self.cancel()

    # -- workers that die ---------------------------------------------------------------
    def _retire(self, worker: WorkerState) -> None:
        worker.phase = WorkerPhase.DEAD
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        if worker in self._workers:
            self._workers.remove(worker)

    def _requeue(self, worker: WorkerState) -> None:
        self._retire(worker)
        self._uncount(worker)
        self._queue.extendleft(reversed(worker.outstanding))
        worker.outstanding.clear()

    def _on_death(
        self, worker: WorkerState, reason: BaseException | None, state: RunState = RunState.FAILED
    ) -> None:
        """A worker died or was killed: fail its current run, re-queue the rest."""
        if worker.dead:
            return
        phase = worker.phase
        self._retire(worker)
        if self._shutting_down:
            # Killed by us on the way out: unfinished runs stay unrecorded, so resume
            # simply runs them again rather than reporting crashes that did not happen.
            return
        if not phase.ready:
            # It died while starting up: no run of its chunk began, so none is blamed.
            self._uncount(worker)
            self._queue.extendleft(reversed(worker.outstanding))
            worker.outstanding.clear()
        if not worker.outstanding:
            if not phase.stopping and worker.process.exitcode != 0:
                self._barren_deaths += 1
                if self._barren_deaths > _MAX_BARREN_DEATHS:
                    with self._lock:
                        self.errors.append(
                            WorkerCrashedError(
                                f"worker processes keep dying before running anything "
                                f"(last one {describe_exit(worker.process.exitcode)})",
                                exit_code=worker.process.exitcode,
                            )
                        )
                    self.cancel()
            return
        task_index = worker.outstanding.popleft()
        rest = list(worker.outstanding)
        worker.outstanding.clear()
        if reason is None:
            reason = WorkerCrashedError(
                f"worker process {worker.process.pid} {describe_exit(worker.process.exitcode)} "
                f"while running task {task_index}; the other runs continue",
                run_id=self.job.plan.task(task_index).run_id,
                exit_code=worker.process.exitcode,
            )
        self._settle_current(worker)
        record = self._fail(task_index, reason, worker, state)
        self._claims.done(task_index)
        if rest:
            if self.is_cancelled:
                self.skipped_by_cancel(len(rest))
            else:
                self._queue.extendleft(reversed(rest))
        if record is None:
            return
        self.finished(record)

    def _fail(
        self, task_index: int, reason: BaseException, worker: WorkerState, state: RunState
    ) -> RunRecord | None:
        plan, store = self.job.plan, self.job.store
        task = plan.task(task_index)
        # The worker may have persisted the run just before dying; that record stands.
        finished = store.states([task.run_id])[0] is StoredState.DONE
        existing = store.get_record(task.run_id) if finished else None
        if existing is not None:
            return existing
        worker_id = worker_identity(worker.label)
        record = failure_record(plan, task, reason, self._executor.name, worker_id, state)
        persist(store, record)
        return record

    def _enforce_timeout(self) -> None:
        if self._timeout is None:
            return
        for worker in list(self._workers):
            # A result already sent means the run finished in time: read it first.
            self._drain(worker)
            if worker.dead or not worker.outstanding or worker.running_since is None:
                continue
            if time.monotonic() - worker.running_since < self._timeout:
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
                        f"its worker process was killed",
                        run_id=self.job.plan.task(task_index).run_id,
                        timeout=self._timeout,
                    ),
                )
            else:
                # It finished at the last moment; the run killed instead had just begun
                # and is blameless, so it is re-queued rather than failed.
                self._requeue(worker)
