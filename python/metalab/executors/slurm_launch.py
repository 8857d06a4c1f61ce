"""A submitted SLURM experiment: its array jobs, watched through the store and ``squeue``.

:class:`SlurmLaunch` maps array tasks to runs (the identity, or the submission's task list
blob, :mod:`metalab.executors.slurm_tasks`), asks the scheduler in one throttled ``squeue`` call per
poll which tasks are still queued, and records a failure for each run whose array task
left the queue without finishing it (killed, out of memory, out of time), so that it is
visible and retried on resume. :func:`reattach` rebuilds a launch from the pointer
``metalab.run`` saved (``metalab.reconnect``).
"""

from __future__ import annotations

import subprocess
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metalab.errors import MetalabError, StoreError, WorkerCrashedError
from metalab.execution import failure_record, persist, worker_identity
from metalab.executors.base import Launch, LaunchCounts
from metalab.executors.slurm_commands import scancel
from metalab.executors.slurm_config import EXECUTOR_NAME
from metalab.executors.slurm_paths import SubmissionPaths, last_line
from metalab.executors.slurm_poll import (
    FIRST_S,
    PollClock,
    QueueAnswer,
    answering,
    ask_queue,
    born_at,
    shared_answer,
)
from metalab.executors.slurm_reasons import TaskEnd, reason_from_log, sacct_task_ends
from metalab.executors.slurm_tasks import decode_task_list, encode_task_list
from metalab.keys import slurm_cancelled_key, slurm_resolved_key, slurm_tasks_key
from metalab.plan import RunPlan, TaskIdentity
from metalab.plan_loading import load_plan
from metalab.records import FailureReason, RunState, StoredState
from metalab.store.base import Store

__all__ = [
    "EXECUTOR_NAME",
    "POLL_INTERVAL_S",
    "SlurmLaunch",
    "decode_task_list",
    "encode_task_list",
    "reattach",
]
POLL_INTERVAL_S = FIRST_S
REQUEUE_GRACE_S = 300.0
"""How long a requeued task may stay out of squeue's answer before it counts as gone
(SLURM holds a requeued job back ~120 s before it may start again)."""
# slurmstepd's last words for a task that SLURM puts back in the queue.
_REQUEUED_WORDS = ("DUE TO JOB REQUEUE", "DUE TO PREEMPTION")
"""Time between two ``squeue`` calls after a change; longer while nothing changes or the
controller struggles (:mod:`metalab.executors.slurm_poll`)."""


class SlurmLaunch(Launch):
    """Array jobs of one submission, watched through the store and ``squeue``.

    Args:
        store: the store the tasks write to.
        plan: the experiment's plan.
        submission: submission id (names the per-submission blobs).
        shards: ``(job_id, offset, count)`` of each array job.
        runs_per_task: runs per array task.
        todo: task indices of the submission, or None for all tasks of the plan.
        n_todo: number of tasks in the submission.
        cancelled: the submission was cancelled before (reconnecting).
        submit_dir: where sbatch ran, for the logs of stores that keep none (SLURM's
            default ``slurm-<job>_<index>.out`` there); None when not known.
        retry_job: job id of the submission's retry job (``SlurmConfig(retries=N)``,
            :mod:`metalab.executors.slurm_retry`); the launch finishes after it and the
            resubmissions it made.
        wave_job: job id of the submission's wave job, which submits its later waves
            (:mod:`metalab.executors.slurm_waves`); the launch finishes after them.
        resolved: runs cancelled with the submission if all its tasks were already seen to
            leave and accounted for (blob :func:`~metalab.keys.slurm_resolved_key`), else None.
    """

    def __init__(
        self,
        *,
        store: Store,
        plan: RunPlan,
        submission: str,
        shards: list[tuple[str, int, int]],
        runs_per_task: int,
        todo: Sequence[int] | None,
        n_todo: int,
        cancelled: bool = False,
        submit_dir: str | None = None,
        retry_job: str | None = None,
        wave_job: str | None = None,
        resolved: int | None = None,
    ) -> None:
        from metalab.executors.slurm_retry import RetryFollower
        from metalab.executors.slurm_waves import WaveFollower

        self.store = store
        self.plan = plan
        self.submission = submission
        self.shards = shards
        self.runs_per_task = runs_per_task
        self._todo = todo
        self.n_todo = n_todo
        self._lock = threading.RLock()
        self._cancelled = cancelled
        self._clock = PollClock()
        self._seen = 0  # sequence number of the last squeue answer used
        self._born = born_at()  # answers taken before may not list our jobs
        self._signature: tuple[Any, ...] | None = None
        self._running = 0
        self._cancelled_runs = resolved or 0
        self._finished = not shards
        self._warned = False
        # Array tasks (global index) seen requeued while out of squeue's answer, and since when.
        self._requeued_since: dict[int, float] = {}
        # Runs of each running array task (global index) not yet seen done.
        self._not_done: dict[int, list[str]] = {}
        # Array tasks (global index) not yet seen to leave the queue.
        self._unresolved: set[int] = set()
        for _job, offset, count in shards if resolved is None else ():
            self._unresolved.update(range(offset, offset + count))
        self._global_of = {job: offset for job, offset, _count in shards}
        self.paths = SubmissionPaths.of(store, submission, submit_dir)
        # The followers reattach the launches their jobs submitted through ``reattach``
        # (handed in: they sit below this module).
        self._retry = RetryFollower(self, retry_job, reattach) if retry_job else None
        if retry_job:
            self._global_of[retry_job] = RetryFollower.TASK  # seen by the same squeue call
        self._wave = WaveFollower(self, wave_job, reattach) if wave_job else None
        if wave_job:
            self._global_of[wave_job] = WaveFollower.TASK

    @property
    def finished(self) -> bool:
        """True once no task of the submission (nor of its retries) can run any more."""
        return self._finished

    def task_indices(self) -> list[int]:
        """Task indices of every run of the submission, in submission order."""
        return list(range(self.n_todo)) if self._todo is None else [int(t) for t in self._todo]

    @property
    def tracks_store(self) -> bool:
        """Always True: runs execute on the cluster and report through the store."""
        return True

    @property
    def job_ids(self) -> list[str]:
        """SLURM job ids of the arrays, in shard order (then the retry job and retries)."""
        jobs = [job for job, _offset, _count in self.shards]
        if self._retry is not None:
            jobs += self._retry.job_ids
        return jobs + self._wave.job_ids if self._wave is not None else jobs

    @property
    def reconnect_info(self) -> dict[str, Any]:
        """What :func:`reattach` needs (saved by ``metalab.run`` in the launch blob)."""
        return {
            "submission": self.submission,
            "shards": [list(shard) for shard in self.shards],
            "job_ids": self.job_ids,
            "runs_per_task": self.runs_per_task,
            "n_todo": self.n_todo,
            # No shards, no task list: a resubmission with nothing to do writes no blob,
            # so its pointer must not name one (reconnect would look for it).
            "tasks_key": slurm_tasks_key(self.submission) if self._todo and self.shards else None,
            "retry_job": self._retry.job_id if self._retry is not None else None,
            "wave_job": self._wave.job_id if self._wave is not None else None,
        }

    def log_path(self, global_task: int) -> Path | None:
        """Where the stdout/stderr of global array task ``global_task`` goes, if known.

        ``{store}/slurm/logs/<submission>/shard<n>-<index>.out`` for a FileStore (written
        through a private alias when sbatch cannot name that directory), else SLURM's
        default file in the directory sbatch ran in.
        """
        for number, (job, offset, count) in enumerate(self.shards):
            if offset <= global_task < offset + count:
                return self.paths.log_path(number, job, global_task - offset)
        return None

    # -- mapping --------------------------------------------------------------------------
    def _task_indices(self, global_task: int) -> list[int]:
        start = global_task * self.runs_per_task
        stop = min(start + self.runs_per_task, self.n_todo)
        if self._todo is None:
            return list(range(start, stop))
        return [self._todo[pos] for pos in range(start, stop)]

    # -- polling --------------------------------------------------------------------------
    def _squeue(self, force: bool) -> QueueAnswer | None:
        """This poll's squeue answer (shared with the submission's other launches, see
        :mod:`~metalab.executors.slurm_poll`); None when it is not due or squeue failed."""
        now = time.monotonic()
        answer = None if force else shared_answer(self._seen, self._born)
        if answer is not None:
            return answer
        if not force and not self._clock.due(now):
            return None
        try:
            return ask_queue()
        except (MetalabError, OSError, subprocess.TimeoutExpired) as exc:
            self._clock.failed(now)
            self._warn(f"{exc}; will retry")
            return None

    def _warn(self, message: str) -> None:
        # A transient scheduler hiccup must never fail runs; say it once, keep polling.
        if not self._warned:
            warnings.warn(f"metalab SLURM: {message}", RuntimeWarning, stacklevel=3)
            self._warned = True

    def poll(self, force: bool = False) -> None:
        """Refresh from ``squeue`` when the poll clock says so (1 s, longer while idle)."""
        with self._lock:
            if self._finished:
                return
            started = time.monotonic()
            answer = self._squeue(force)
            if answer is None:
                return
            self._seen = answer.seq
            queued = answer.tasks_of(self._global_of)
            with answering(answer):  # launches the followers find may share it
                self._update(queued)
            signature = (
                answer.states_of(self.job_ids),
                self._running,
                len(self._unresolved),
                self._finished,
            )
            changed, self._signature = signature != self._signature, signature
            self._clock.polled(started, changed=changed, took=answer.taken - started)

    def _update(self, queued: dict[int, str]) -> None:
        with self._lock:
            retry = self._retry
            retry_queued = retry is not None and queued.pop(retry.TASK, None) is not None
            wave = self._wave
            wave_queued = wave is not None and queued.pop(wave.TASK, None) is not None
            running_tasks = [g for g, state in queued.items() if state != "PENDING"]
            gone = [g for g in self._unresolved if g not in queued]
            for g in [g for g in self._requeued_since if g in queued]:
                del self._requeued_since[g]  # back in the queue: a later exit is judged anew
            # Markers are read after squeue answered: a task absent from the answer had
            # exited before, so every marker it wrote is already visible.
            self._resolve(gone)
            for g in gone:
                self._not_done.pop(g, None)
            self._running = self._unfinished_count(running_tasks)
            if not self._unresolved:
                # With retries (waves), the launch goes on until the retry (wave) job and
                # the submissions it made end.
                retried = self._retry is None or self._retry.update(retry_queued)
                waved = self._wave is None or self._wave.update(wave_queued)
                if retried and waved:
                    self._finished = True
                    self._running = 0
                else:
                    self._running = (self._retry.running() if self._retry else 0) + (
                        self._wave.running() if self._wave else 0
                    )

    def _run_ids(self, global_tasks: list[int]) -> list[str]:
        """Run IDs of ``global_tasks``' runs from the plan's one cached Rust call (a
        TaskIdentity per run cost ~45 us each: seconds per poll at 300k)."""
        ids = self.plan.run_ids
        if self._todo is not None:
            return [ids[t] for g in global_tasks for t in self._task_indices(g)]
        out: list[str] = []
        k = self.runs_per_task
        for g in global_tasks:
            out += ids[g * k : min(g * k + k, self.n_todo)]
        return out

    def _unfinished_count(self, global_tasks: list[int]) -> int:
        """Runs of the running ``global_tasks`` neither done nor failed. A run seen done
        stays done while its task runs (a requeued task skips it too): each poll asks
        only about runs not yet seen done (a marker dropped for a corrupt record is
        looked at again by :meth:`_resolve` when its task leaves)."""
        if not global_tasks:
            return 0
        lists: list[list[str]] = []
        for g in global_tasks:
            left = self._not_done.get(g)
            if left is None:
                left = self._not_done[g] = self._run_ids([g])
            lists.append(left)
        states = self.store.states([r for left in lists for r in left])
        count, pos = 0, 0
        for g, left in zip(global_tasks, lists, strict=True):
            mine = states[pos : pos + len(left)]
            pos += len(left)
            self._not_done[g] = [
                r for r, st in zip(left, mine, strict=True) if st is not StoredState.DONE
            ]
            count += mine.count(StoredState.ABSENT)
        return count

    def _resolve(self, gone: list[int]) -> None:
        """Account for array tasks that left the queue; unfinished runs crashed."""
        if not gone:
            return
        states = self.store.states(self._run_ids(gone))
        crashed: list[tuple[int, TaskIdentity]] = []
        if StoredState.ABSENT in states:  # usually none: then no Python loop per run
            owners = [(g, t) for g in gone for t in self._task_indices(g)]
            for (g, t), state in zip(owners, states, strict=True):
                if state is not StoredState.ABSENT:
                    continue
                if self._cancelled:
                    self._cancelled_runs += 1
                    continue
                # Only an unfinished run needs its identity (params, seeds) for its record.
                crashed.append((g, self.plan.task(t)))
        # One accounting call for every task that left unfinished in this poll.
        ends = sacct_task_ends(self.job_ids) if crashed else None
        coming_back = {g for g, _task in crashed if self._runs_again(g, self._task_end(ends, g))}
        for g, task in crashed:
            if g not in coming_back:
                self._record_crash(task, g, self._task_end(ends, g))
        self._unresolved.difference_update(set(gone) - coming_back)
        if not self._unresolved and self._retry is None and self._wave is None:
            # No task of ours can start any more (a retry/wave job releases them itself).
            self.paths.release()
            # Every unfinished run has its record or was counted cancelled: a reconnect
            # need not scan every run again to find the same (0.4 s at 300,000 runs).
            self.store.put_blob(slurm_resolved_key(self.submission), b"%d" % self._cancelled_runs)

    def _runs_again(self, global_task: int, end: TaskEnd | None) -> bool:
        """Whether a task missing from squeue was requeued and will run again by itself.

        A requeued task (``scontrol requeue``, preemption with ``PreemptMode=REQUEUE``)
        stays in squeue (COMPLETING, then PENDING) and accounting calls it REQUEUED, then
        PENDING; a task missing from squeue's answer that accounting still calls pending,
        running or requeued is looked at again on later polls for up to
        :data:`REQUEUE_GRACE_S`, not taken for a crash whose unfinished runs would be
        recorded as failed while it still runs them. Without accounting, slurmstepd's
        last log line (requeue or preemption) stands in for that answer.
        """
        if end is not None:
            # Accounting's final verdict is final, whatever the log's last line: a
            # relaunch slurmd refused ("Job credential revoked", when the task is started
            # within the second it was killed in) ends FAILED, and its log still ends with
            # the requeue's words. Waiting for it would only delay its failure 5 minutes.
            waiting = not end.finished
        else:
            log = self.log_path(global_task)
            last = last_line(log) if log is not None else None
            waiting = last is not None and any(word in last for word in _REQUEUED_WORDS)
        if not waiting:
            return False
        since = self._requeued_since.setdefault(global_task, time.monotonic())
        return time.monotonic() - since < REQUEUE_GRACE_S

    def _task_end(self, ends: dict[tuple[str, int], TaskEnd] | None, g: int) -> TaskEnd | None:
        if ends is None:
            return None
        for job, offset, count in self.shards:
            if offset <= g < offset + count:
                return ends.get((job, g - offset))
        return None

    def _record_crash(
        self, task: TaskIdentity, global_task: int, end: TaskEnd | None = None
    ) -> None:
        existing = self.store.get_record(task.run_id)
        if existing is not None and existing.status in (
            RunState.SUCCESS,
            RunState.FAILED,
            RunState.CANCELLED,
        ):
            # The task died between record and marker: the durable record is the truth.
            self.store.mark(task.run_id, existing.status)
            return
        log = self.log_path(global_task)
        last = last_line(log) if log is not None else None
        where = f"its log is {str(log)!r}" if log is not None else "see its SLURM log"
        # Accounting's verdict first (the OOM killer's SIGKILL leaves no word in the
        # worker), then slurmstepd's or the worker's last line, else an unexplained crash.
        reason = end.reason if end is not None else None
        logged = reason_from_log(last)
        why = "killed, out of memory or out of time?"
        if reason is not None and end is not None:
            why = f"SLURM ended it: {end.state}, exit {end.exit_code}"
            if last is not None:  # the worker's own word says more than an exit code
                why = f"{why}; its log ends with: {last}"
        elif logged is not None or (last is not None and last.startswith("metalab.worker:")):
            why = f"its log ends with: {last}"
        elif last is not None:
            why = f"{why} its log ends with: {last}"
        reason = reason or logged or FailureReason.CRASHED
        error = WorkerCrashedError(
            f"SLURM array task of run {task.run_id} (task {task.task_index}) left the queue "
            f"before finishing it ({why}); {where}",
            run_id=task.run_id,
        )
        record = failure_record(
            self.plan, task, error, EXECUTOR_NAME, worker_identity("monitor"), reason=reason
        )
        persist(self.store, record)

    # -- Launch API -----------------------------------------------------------------------
    def counts(self) -> LaunchCounts:
        """Running runs (from squeue, throttled) and runs cancelled with the submission."""
        self.poll()
        with self._lock:
            cancelled = self._cancelled_runs + (self._wave.cancelled() if self._wave else 0)
            return LaunchCounts(running=self._running, cancelled=cancelled)

    def wait(self, timeout: float | None = None) -> bool:
        """Poll until no array task of ours is queued (or ``timeout``); True when finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self._finished:
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            pause = max(self._clock.next_at() - now, 0.05)
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)

    def cancel(self) -> None:
        """``scancel`` every array of the submission; unfinished runs count as cancelled.

        Raises:
            SlurmError: scancel is missing or failed (``exit_code``, ``stderr``).
        """
        with self._lock:
            self._cancelled = True
        self.store.put_blob(slurm_cancelled_key(self.submission), b"1")
        if self._retry is not None:
            self._retry.cancel()
        if self._wave is not None:
            self._wave.cancel()
        if self.shards:
            scancel(self.job_ids)


def reattach(pointer: dict[str, Any], store: Store, plan: RunPlan | None = None) -> SlurmLaunch:
    """Rebuild the launch saved in a launch blob (``metalab.reconnect``).

    Args:
        pointer: the launch pointer ``metalab.run`` saved.
        store: the store it was read from.
        plan: the experiment's plan when the caller already loaded it (else loaded here).

    Raises:
        StoreError: the spec or the task list of the submission is missing.
        SignatureError: the spec was not sealed by this account; it was not unpickled.
    """
    if plan is None:
        plan = load_plan(store, pointer["experiment_id"])
    submission = pointer["submission"]
    todo: Sequence[int] | None = None
    shards = [(str(job), int(offset), int(count)) for job, offset, count in pointer["shards"]]
    # Pointers written before the fix above name a task list for an empty submission:
    # without shards the list is never read, so its absence is not an error.
    key = pointer.get("tasks_key")
    if key and shards:
        data = store.get_blob(key)
        if data is None:
            raise StoreError(
                f"store {store.locator} lacks blob {key}", locator=store.locator, path=key
            )
        todo = decode_task_list(data)
    retry_job, wave_job = pointer.get("retry_job"), pointer.get("wave_job")
    resolved = None
    if shards and not (retry_job or wave_job):
        resolved = _resolved_count(store.get_blob(slurm_resolved_key(submission)))
    return SlurmLaunch(
        store=store,
        plan=plan,
        submission=submission,
        shards=shards,
        runs_per_task=int(pointer["runs_per_task"]),
        todo=todo,
        n_todo=int(pointer["n_todo"]),
        cancelled=store.get_blob(slurm_cancelled_key(submission)) is not None,
        retry_job=retry_job,
        wave_job=wave_job,
        resolved=resolved,
    )


def _resolved_count(data: bytes | None) -> int | None:
    """A resolved blob's cancelled-run count; None when absent or garbled (resolve again)."""
    return int(data) if data is not None and data.isdigit() else None
