"""In-process execution on background threads (the default executor).

``ThreadExecutor(max_workers=1)`` is the default: runs execute one after another on a
background thread, so ``metalab.run`` returns a handle at once and the calling thread can
watch progress. Threads share the interpreter, so this suits I/O-bound operations and
tiny runs; use :class:`~metalab.ProcessExecutor` for CPU-bound work.
"""

from __future__ import annotations

import itertools
import threading
import time

from metalab.capture import output
from metalab.errors import ExecutorError
from metalab.execution import execute_task, worker_identity
from metalab.executors.base import Executor, Job, Launch, TallyingLaunch

__all__ = ["ThreadExecutor"]


class ThreadExecutor(Executor):
    """Run tasks on ``max_workers`` threads of this process.

    Raises:
        ExecutorError: ``max_workers`` is not a positive int.
    """

    name = "thread"
    ships_experiment = False

    def __init__(self, max_workers: int = 1) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ExecutorError(f"max_workers must be a positive int, got {max_workers!r}")
        self.max_workers = max_workers

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers})"

    def launch(self, job: Job) -> Launch:
        if job.timeout is not None:
            raise ExecutorError(
                "threads cannot be stopped, so ThreadExecutor does not support timeout="
                f"{job.timeout!r}; use ProcessExecutor(timeout=...) instead"
            )
        launch = TallyingLaunch(job)
        # Each task is handed out once this launch holds its run's claim (another launch
        # of the same experiment may be executing it: then it is waited for).
        queue = launch.claimed_tasks()
        lock = threading.Lock()
        remaining = [min(self.max_workers, max(1, len(job.task_indices)))]

        def next_task() -> int | None:
            while not launch.is_cancelled:
                task_index = queue.take(block=False)
                if task_index is not None or queue.exhausted:
                    return task_index
                # Only runs executing in another launch are left: look again soon.
                time.sleep(queue.next_poll_in() or 0.05)
            return None

        def worker(number: int) -> None:
            worker_id = worker_identity(f"t{number}")
            try:
                while True:
                    try:
                        task_index = next_task()
                    except BaseException as exc:  # the store refused the claim call
                        launch.started()
                        launch.fatal(exc)
                        launch.cancel()
                        break
                    if task_index is None:
                        break
                    launch.started()
                    try:
                        record = execute_task(
                            job.plan,
                            task_index,
                            job.store,
                            executor=self.name,
                            worker_id=worker_id,
                            derived_metrics=job.derived_metrics,
                        )
                    except BaseException as exc:
                        launch.fatal(exc)
                        launch.cancel()
                        break
                    queue.done(task_index)
                    launch.finished(record)
            finally:
                with lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    launch.skipped_by_cancel(queue.drain())
                    queue.close()
                    # Streams and warning hook are back before wait() returns.
                    output.uninstall()
                    launch.mark_finished()

        # Once per launch: the runs' threads print into their logs (and the terminal),
        # every other thread prints as before.
        output.install()
        try:
            for number in itertools.islice(itertools.count(), remaining[0]):
                threading.Thread(
                    target=worker, args=(number,), daemon=True, name=f"metalab-worker-{number}"
                ).start()
        except BaseException:
            # No worker thread will finish the launch: undo the installation here.
            output.uninstall()
            raise
        return launch
