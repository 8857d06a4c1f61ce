"""The ProcessExecutor driver's view of each worker process: an explicit phase and state.

A worker's life is one :class:`WorkerPhase`; the tasks it holds and whether its current
run is counted running live in its :class:`WorkerState`, so the driver
(:mod:`metalab.executors.process_launch`) never juggles loose flags.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import multiprocessing.connection as mpc
import signal
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WorkerPhase", "WorkerState", "describe_exit", "main_module_hidden"]


@contextlib.contextmanager
def main_module_hidden(active: bool) -> Iterator[None]:
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


def describe_exit(exitcode: int | None) -> str:
    """Say how a worker process ended, for error messages (``exitcode`` as multiprocessing)."""
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


class WorkerPhase(enum.Enum):
    """Where a worker process is in its life, as the driver sees it.

    ``STARTING -> SERVING -> STOPPING -> STOPPED``; a cancel before the worker is ready
    goes ``STARTING -> STOPPING_UNREADY -> STOPPING`` (its Ready still arrives first, the
    pipe being ordered). Any phase ends in ``DEAD``.
    """

    STARTING = "starting"
    """Spawned, its Ready not yet received: none of the tasks it holds has begun."""
    SERVING = "serving"
    """Ready and taking chunks: the first task it holds is its current run."""
    STOPPING_UNREADY = "stopping before ready"
    """Sent Stop while still starting: it will answer Ready, then Dropped."""
    STOPPING = "stopping"
    """Ready, sent Stop: it finishes its current run, then answers Dropped."""
    STOPPED = "stopped"
    """Answered Dropped: it holds nothing and is sent nothing more."""
    DEAD = "dead"
    """Retired: its pipe is closed and its process joined."""

    @property
    def ready(self) -> bool:
        """True once its Ready was received (its held tasks start running)."""
        return self in (WorkerPhase.SERVING, WorkerPhase.STOPPING, WorkerPhase.STOPPED)

    @property
    def stopping(self) -> bool:
        """True between sending Stop and receiving its Dropped answer."""
        return self in (WorkerPhase.STOPPING_UNREADY, WorkerPhase.STOPPING)


@dataclass(eq=False)
class WorkerState:
    """The driver's view of one worker process."""

    process: Any
    conn: mpc.Connection
    label: str
    phase: WorkerPhase = WorkerPhase.STARTING
    outstanding: collections.deque[int] = field(default_factory=collections.deque)
    """Task indices sent and not yet answered, in the order the worker runs them."""
    running_since: float | None = None
    """When its current run (``outstanding[0]``) began; set exactly while it is counted
    running in the launch's counts."""

    @property
    def dead(self) -> bool:
        """True once retired."""
        return self.phase is WorkerPhase.DEAD

    @property
    def takes_work(self) -> bool:
        """True while new chunks may be sent to it."""
        return self.phase in (WorkerPhase.STARTING, WorkerPhase.SERVING)

    def became_ready(self) -> None:
        """Its Ready arrived."""
        self.phase = (
            WorkerPhase.STOPPING
            if self.phase is WorkerPhase.STOPPING_UNREADY
            else WorkerPhase.SERVING
        )

    def stop_sent(self) -> None:
        """A Stop was sent to it."""
        self.phase = WorkerPhase.STOPPING if self.phase.ready else WorkerPhase.STOPPING_UNREADY
