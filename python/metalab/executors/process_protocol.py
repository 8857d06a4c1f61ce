"""The messages a ProcessExecutor driver and its worker processes exchange over a pipe.

Every message is a frozen dataclass, one class per kind, pickled whole by
:meth:`multiprocessing.connection.Connection.send`; nothing is sent as a positional
tuple, so a field added to one side cannot be unpacked in the wrong place on the other.

A worker's conversation, in order::

    driver -> worker   Credentials, Init, then any number of Tasks, finally Stop
    worker -> driver   Ready (or InitError), one Done per run (or Fatal), Dropped on Stop

The pipe is private to one worker and ordered, so a :class:`Dropped` is always preceded by
that worker's :class:`Ready`.
"""

from __future__ import annotations

import multiprocessing.connection as mpc
import traceback
from dataclasses import dataclass
from typing import Any, TypeVar

from metalab.errors import ExecutorError
from metalab.store.credentials import Credential

__all__ = [
    "Credentials",
    "Done",
    "Dropped",
    "Fatal",
    "Init",
    "InitError",
    "Ready",
    "Stop",
    "Tasks",
    "ToDriver",
    "ToWorker",
    "receive",
    "receive_instruction",
    "receive_report",
]


# -- driver -> worker -------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """The store's passwords, sent first so they never appear in argv or the environment."""

    credentials: tuple[Credential, ...]


@dataclass(frozen=True)
class Init:
    """Everything a worker needs to rebuild the experiment and open the store itself."""

    spec_text: str
    """The experiment spec as JSON, with its ``context_fingerprint``."""
    locator: str
    """The store's locator; the store object itself is never pickled."""
    derived_blob: bytes
    """The job's derived-metric functions, cloudpickled; empty when there are none."""
    executor_name: str
    label: str
    """This worker's label (``p0``, ``p1``...), part of its worker identity."""


@dataclass(frozen=True)
class Tasks:
    """A chunk of task indices, to run in order after those already held."""

    indices: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    """Finish the current run, give back the rest (:class:`Dropped`) and exit."""


# -- worker -> driver -------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """Set-up succeeded; the first held task starts now (the per-run clock starts here)."""


@dataclass(frozen=True)
class InitError:
    """Set-up failed (spec, store or login); the worker exits and the launch stops."""

    error_type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> InitError:
        """Describe ``exc``, the exception being handled."""
        return cls(type(exc).__name__, str(exc), traceback.format_exc())


@dataclass(frozen=True)
class Done:
    """One run finished (its record and marker are stored); a light summary of it."""

    task_index: int
    status: str
    """A :class:`metalab.records.RunState` value."""
    metrics: dict[str, Any]
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True)
class Fatal:
    """The store failed while recording ``task_index``; the worker exits, the launch stops."""

    task_index: int
    error_type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, task_index: int, exc: BaseException) -> Fatal:
        """Describe ``exc``, the exception being handled, raised by ``task_index``."""
        return cls(task_index, type(exc).__name__, str(exc), traceback.format_exc())


@dataclass(frozen=True)
class Dropped:
    """The answer to :class:`Stop`: the held task indices that never started."""

    task_indices: tuple[int, ...]


ToWorker = Credentials | Init | Tasks | Stop
"""A message the driver sends to a worker."""
ToDriver = Ready | InitError | Done | Fatal | Dropped
"""A message a worker sends to the driver."""

_M = TypeVar("_M")


def receive(conn: mpc.Connection, expected: type[_M]) -> _M:
    """Read the next message from ``conn``, which must be an ``expected``.

    Raises:
        ExecutorError: the message is of another kind (the two ends disagree on the
            protocol, e.g. a stale worker module).
        EOFError: the other end closed the pipe.
    """
    message = conn.recv()
    if not isinstance(message, expected):
        raise _unexpected(message, expected.__name__)
    return message


def receive_instruction(conn: mpc.Connection) -> Tasks | Stop:
    """Read a worker's next instruction once it is set up (:class:`Tasks` or :class:`Stop`).

    Raises:
        ExecutorError: the message is of another kind.
        EOFError: the driver closed the pipe.
    """
    message = conn.recv()
    if not isinstance(message, Tasks | Stop):
        raise _unexpected(message, "Tasks or Stop")
    return message


def receive_report(conn: mpc.Connection) -> ToDriver:
    """Read a worker's next report to the driver.

    Raises:
        ExecutorError: the message is not a :data:`ToDriver` kind.
        EOFError: the worker closed the pipe (it exited).
    """
    message = conn.recv()
    if not isinstance(message, ToDriver):
        raise _unexpected(message, "worker report")
    return message


def _unexpected(message: object, expected: str) -> ExecutorError:
    return ExecutorError(
        f"expected a {expected} message on the worker pipe, got {message!r}; "
        f"the driver and its workers must run the same metalab"
    )
