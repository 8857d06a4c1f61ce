"""The worker process of a ProcessExecutor: set up once, then run the tasks it is sent.

A worker receives :class:`~metalab.executors.process_protocol.Credentials` and
:class:`~metalab.executors.process_protocol.Init`, rebuilds the experiment and opens the
store itself (store objects are never pickled), answers ``Ready``, then runs the task
indices of each ``Tasks`` chunk in order with :func:`metalab.execution.execute_task`,
answering one ``Done`` per run. Instructions are read between runs only, so a chunk
never interrupts a run and the driver always knows which task is running: the first one
it sent and has not heard back about.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing.connection as mpc
import signal
from typing import Any

import cloudpickle

from metalab.capture import output
from metalab.execution import DerivedFn, execute_task, worker_identity
from metalab.executors.process_protocol import (
    Credentials,
    Done,
    Dropped,
    Fatal,
    Init,
    InitError,
    Ready,
    Stop,
    receive,
    receive_instruction,
)
from metalab.plan import RunPlan
from metalab.store.base import Store

__all__ = ["worker_main"]


def worker_main(conn: mpc.Connection, inherited: list[Any] | None = None) -> None:
    """Entry point of a worker process: set up once, then execute tasks as they come.

    Args:
        conn: this worker's end of its private pipe to the driver.
        inherited: the driver's pipe ends a forked child holds copies of; closed at once.
    """
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
            _serve(conn)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        # The driver went away or the user pressed Ctrl-C: nothing left to report to.
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()


class _Setup:
    """What a worker rebuilt from its :class:`Init` message."""

    __slots__ = ("derived", "executor_name", "plan", "store", "worker_id")

    def __init__(self, init: Init) -> None:
        # Imported here: the worker needs them, the driver importing this module does not.
        from metalab.plan_loading import plan_from_spec
        from metalab.store import credentials
        from metalab.store.locator import create_store

        self.plan: RunPlan = plan_from_spec(json.loads(init.spec_text), "the driver's spec")
        self.store: Store = create_store(init.locator)
        # A refused login stops here, before any run executes (a FallbackStore would
        # otherwise send every record to its fallback).
        credentials.verify_login(self.store)
        self.derived: list[DerivedFn] = (
            cloudpickle.loads(init.derived_blob) if init.derived_blob else []
        )
        self.executor_name = init.executor_name
        self.worker_id = worker_identity(init.label)


def _serve(conn: mpc.Connection) -> None:
    from metalab.store import credentials

    # The store's passwords come first, over this private pipe (never argv or environ).
    handed_over = receive(conn, Credentials)
    init = receive(conn, Init)
    try:
        credentials.install(handed_over.credentials)
        setup = _Setup(init)
    except BaseException as exc:  # reported to the driver, which stops
        conn.send(InitError.of(exc))
        return
    conn.send(Ready())
    pending: collections.deque[int] = collections.deque()
    while True:
        # Read instructions between runs only, so a chunk never interrupts a run.
        if not pending or conn.poll():
            instruction = receive_instruction(conn)
            if isinstance(instruction, Stop):
                conn.send(Dropped(tuple(pending)))
                return
            pending.extend(instruction.indices)
            continue
        task_index = pending.popleft()
        try:
            record = execute_task(
                setup.plan,
                task_index,
                setup.store,
                executor=setup.executor_name,
                worker_id=setup.worker_id,
                derived_metrics=setup.derived,
            )
        except BaseException as exc:  # store failure: the driver stops
            conn.send(Fatal.of(task_index, exc))
            return
        error = record.error
        conn.send(
            Done(
                task_index,
                record.status.value,
                record.metrics,
                error.type if error else None,
                error.message if error else None,
            )
        )
