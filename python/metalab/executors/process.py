"""Process-pool execution for CPU-bound operations: :class:`ProcessExecutor`.

Design, chosen for low per-run overhead and robustness:

* A launch starts ``max_workers`` long-lived worker processes
  (:mod:`metalab.executors.process_worker`). Each receives the experiment spec once (JSON
  from :func:`metalab.spec.experiment_to_spec`; the operation travels by value with
  cloudpickle when its module cannot be imported, e.g. a script's ``__main__`` or a
  notebook cell) plus the store locator, and rebuilds the experiment and the store itself
  — store objects are never pickled. The messages are typed, one dataclass per kind
  (:mod:`metalab.executors.process_protocol`).
* The driver (:mod:`metalab.executors.process_launch`), a dispatcher thread owning the
  worker processes, then feeds task indices in chunks. A worker runs its chunk in order
  with :func:`metalab.execution.execute_task` (which writes the record and marker) and
  answers each run with a small message (task index, status, metrics) so progress
  advances in completion order.
* Because chunks are processed in order, the driver always knows which task a worker is
  running: the first of its ``outstanding`` tasks. If the worker dies hard (segfault,
  ``os._exit``, SIGKILL/OOM) or exceeds the per-run timeout, only that run is recorded
  failed (:class:`WorkerCrashedError` / :class:`RunTimeoutError`); the rest of its chunk
  is re-queued and a replacement worker is started.
* Each worker's life is an explicit
  :class:`~metalab.executors.process_state.WorkerPhase` (starting, serving, stopping,
  stopped, dead); whether its current run is counted running is one field of its state.
* With the spawn and forkserver start methods, multiprocessing normally re-executes the
  user's ``__main__`` script in every child, which breaks (or recursively launches) scripts
  without an ``if __name__ == "__main__"`` guard. Workers never need the user's main
  module — the operation arrives by value — so it is hidden while children start.
"""

from __future__ import annotations

import multiprocessing
import os

from metalab.errors import ExecutorError
from metalab.executors.base import Executor, Job, Launch
from metalab.executors.process_launch import ProcessLaunch
from metalab.executors.process_worker import worker_main as _worker_main

__all__ = ["ProcessExecutor"]

_START_METHODS = ("spawn", "fork", "forkserver")


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
        # The entry point is looked up at each launch, so a test can swap it for fork children.
        launch = ProcessLaunch(job, self, _worker_main)
        launch.begin()
        return launch
