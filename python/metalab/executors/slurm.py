"""Run an experiment on a SLURM cluster as index-addressed job arrays.

Submission writes nothing per run: each array task recomputes its runs from
``SLURM_ARRAY_TASK_ID`` and the experiment spec that ``metalab.run`` stored (see
:mod:`metalab.worker`). When only some tasks remain (resume), their indices go into ONE
compact per-submission blob ``slurm-<submission>-tasks`` (little-endian uint32); when every
task runs, the mapping is the identity and nothing is written.

Status comes from the store's markers (``tracks_store``); the scheduler is asked, in one
throttled ``squeue`` call per poll, only which array tasks are still queued or running. An
array task that left the queue without its runs finished crashed (killed, out of memory,
walltime): its unfinished runs get a failure record so that they are visible and retried
on resume. Shards and ``max_concurrent``: see :mod:`metalab.executors.slurm_script`.
"""

from __future__ import annotations

import array
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metalab.errors import ExecutorError, SlurmError, WorkerCrashedError
from metalab.execution import failure_record, persist, worker_identity
from metalab.executors.base import Executor, Job, Launch, LaunchCounts
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_paths import SubmissionPaths, last_line
from metalab.executors.slurm_script import (
    Shard,
    job_name,
    plan_shards,
    render_script,
    sbatch_options,
)
from metalab.plan import RunPlan
from metalab.records import RunState
from metalab.store import credentials
from metalab.store.base import Store

__all__ = [
    "SlurmConfig",
    "SlurmExecutor",
    "SlurmLaunch",
    "decode_task_list",
    "encode_task_list",
    "reattach",
]

EXECUTOR_NAME = "slurm"
POLL_INTERVAL_S = 2.0
"""Least time between two ``squeue`` calls of one launch (the controller is shared)."""
_SUBPROCESS_TIMEOUT_S = 60.0
_ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)


def tasks_key(submission: str) -> str:
    """Blob key of a submission's task list."""
    return f"slurm-{submission}-tasks"


def derived_key(submission: str) -> str:
    """Blob key of a submission's pickled derived-metric functions."""
    return f"slurm-{submission}-derived"


def cancelled_key(submission: str) -> str:
    """Blob key written when a submission was cancelled (seen by reconnected handles)."""
    return f"slurm-{submission}-cancelled"


def encode_task_list(indices: Sequence[int]) -> bytes:
    """Pack task indices as little-endian uint32 (4 bytes a task, 1.2 MB for 300k)."""
    packed = array.array("I", indices)
    if packed.itemsize != 4:  # pragma: no cover - every mainstream platform has 4-byte I
        packed = array.array("L", indices)
    if sys.byteorder != "little":  # pragma: no cover - the blob format is little-endian
        packed.byteswap()
    return packed.tobytes()


def decode_task_list(data: bytes) -> array.array[int]:
    """Unpack :func:`encode_task_list` output (indexable without building a list)."""
    packed = array.array("I")
    packed.frombytes(data)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed


def _new_submission_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def _run_tool(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command; a missing binary is a SlurmError naming it."""
    if shutil.which(argv[0]) is None:
        raise SlurmError(f"{argv[0]} not found on PATH: is this a SLURM login node?")
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_SUBPROCESS_TIMEOUT_S,
        check=False,
    )


@dataclass
class _Submission:
    """Everything derived from a job before anything is submitted (shared by dry runs)."""

    submission: str
    todo: Sequence[int]
    identity: bool
    shards: list[Shard]
    scripts: list[str]
    paths: SubmissionPaths
    secrets: list[credentials.Credential]
    """Passwords of the store's logins, written to the password file at submission."""


class SlurmExecutor(Executor):
    """Submit runs as SLURM job arrays (see the module docstring and ``SlurmConfig``).

    Args:
        config: resources and environment of the array tasks; default ``SlurmConfig()``.
        python: interpreter the array tasks run; default ``sys.executable`` of the
            submitting process (the node must see the same path, e.g. a shared venv).
    """

    name = EXECUTOR_NAME

    def __init__(self, config: SlurmConfig | None = None, *, python: str | None = None) -> None:
        if config is None:
            config = SlurmConfig()
        if not isinstance(config, SlurmConfig):
            raise ExecutorError(f"SlurmExecutor needs a metalab.SlurmConfig, got {config!r}")
        self.config = config
        self.python = python or sys.executable

    def __repr__(self) -> str:
        return f"SlurmExecutor({self.config!r})"

    # -- planning -------------------------------------------------------------------------
    def _prepare(self, job: Job, submission: str) -> _Submission:
        plan, store = job.plan, job.store
        todo = job.task_indices
        identity = len(todo) == plan.total  # todo is a sorted subset: same size => all
        k = self.config.runs_per_task
        shards = plan_shards(-(-len(todo) // k), self.config)
        paths = SubmissionPaths.of(store, submission, os.getcwd())
        secrets = credentials.credentials_of(store)
        passfile = str(paths.passfile) if secrets else None
        scripts = [
            render_script(
                self.config,
                python=self.python,
                store_locator=store.locator,
                experiment_id=plan.experiment_id,
                offset=shard.offset,
                tasks_key=None if identity else tasks_key(submission),
                derived_key=derived_key(submission) if job.derived_metrics else None,
                timeout=job.timeout,
                job_name=job_name(plan.experiment.name, plan.run_ids),
                passfile=passfile,
            )
            for shard in shards
        ]
        return _Submission(submission, todo, identity, shards, scripts, paths, secrets)

    def _sbatch_argv(self, prepared: _Submission, shard: Shard, after_job: str | None) -> list[str]:
        output = prepared.paths.output(shard.number)
        return ["sbatch", *sbatch_options(shard, output, after_job)]

    def describe(self, plan: RunPlan, store: Store, todo: list[int]) -> None:
        """Print what :meth:`launch` would submit (``metalab.run(..., dry_run=True)``)."""
        prepared = self._prepare(Job(plan, store, todo), "DRYRUN")
        k = self.config.runs_per_task
        n_tasks = sum(shard.count for shard in prepared.shards)
        print(f"SLURM dry run of {plan.experiment_id} into {store.locator}")
        print(f"  runs: {plan.total} total, {len(todo)} to run, {plan.total - len(todo)} done")
        print(
            f"  array tasks: {n_tasks} ({k} run(s) per task), arrays: {len(prepared.shards)}"
            f" (max_array_size={self.config.max_array_size}, "
            f"max_concurrent={self.config.max_concurrent})"
        )
        if not prepared.identity:
            print(f"  task list: blob {tasks_key('<submission>')} ({4 * len(todo)} bytes)")
        paths = prepared.paths
        if prepared.secrets:
            print(f"  passwords: file {paths.passfile} (mode 0600, removed when finished)")
        if paths.log_target != paths.log_dir:
            print(f"  logs: {paths.log_dir} (through the alias {paths.log_target})")
        for shard in prepared.shards:
            wait = f", after array {shard.after}" if shard.after is not None else ""
            print(
                f"  array {shard.number}: {shard.count} tasks, offset {shard.offset}, "
                f"--array={shard.array_spec}{wait}"
            )
        # Scripts differ only by --offset: show them all for a few shards, else the ends.
        shown = (
            prepared.shards
            if len(prepared.shards) <= 4
            else [prepared.shards[0], prepared.shards[-1]]
        )
        for shard in shown:
            after = f"<job of array {shard.after}>" if shard.after is not None else None
            argv = self._sbatch_argv(prepared, shard, after)
            print(f"--- array {shard.number}: {shlex.join(argv)} <<'EOF'")
            print(prepared.scripts[shard.number], end="")
            print("EOF")
        if len(shown) < len(prepared.shards):
            print(f"  ({len(prepared.shards) - 2} more arrays: same script, other --offset)")

    # -- submission -----------------------------------------------------------------------
    def launch(self, job: Job) -> SlurmLaunch:
        """Submit the job's tasks as array jobs and return at once.

        Raises:
            SlurmError: sbatch is missing or refused a shard (shards submitted before the
                failure are cancelled, so nothing half-submitted keeps running).
        """
        submission = _new_submission_id()
        prepared = self._prepare(job, submission)
        store = job.store
        if not prepared.identity and prepared.shards:
            store.put_blob(tasks_key(submission), encode_task_list(prepared.todo))
        if job.derived_metrics and prepared.shards:
            from metalab.spec import derived_to_bytes

            key = derived_key(submission)  # sealed: workers refuse functions we did not write
            store.put_blob(key, derived_to_bytes(job.derived_metrics, key))
        job_ids: list[str] = []
        try:
            if prepared.shards:
                prepared.paths.create(prepared.secrets)
            for shard in prepared.shards:
                after = job_ids[shard.after] if shard.after is not None else None
                argv = self._sbatch_argv(prepared, shard, after)
                try:
                    done = _run_tool(argv, stdin=prepared.scripts[shard.number])
                except subprocess.TimeoutExpired as exc:
                    # sbatch retries forever while the controller is at MaxJobCount (array
                    # tasks count as jobs): fewer, packed tasks are the way out.
                    raise SlurmError(
                        f"sbatch of array {shard.number} did not answer in {exc.timeout:.0f}s "
                        f"(controller busy or MaxJobCount reached?); try a larger "
                        f"runs_per_task so that fewer array tasks are queued"
                    ) from exc
                if done.returncode != 0:
                    raise SlurmError(
                        f"sbatch refused array {shard.number} of {job.plan.experiment_id} "
                        f"(exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                    )
                job_ids.append(done.stdout.strip().split(";")[0])
        except BaseException:
            if job_ids:
                _run_tool(["scancel", *job_ids])
            prepared.paths.release()
            raise
        return SlurmLaunch(
            store=store,
            plan=job.plan,
            submission=submission,
            shards=[
                (jid, s.offset, s.count) for jid, s in zip(job_ids, prepared.shards, strict=True)
            ],
            runs_per_task=self.config.runs_per_task,
            todo=None if prepared.identity else prepared.todo,
            n_todo=len(prepared.todo),
            submit_dir=prepared.paths.submit_dir,
        )


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
    ) -> None:
        self.store = store
        self.plan = plan
        self.submission = submission
        self.shards = shards
        self.runs_per_task = runs_per_task
        self._todo = todo
        self.n_todo = n_todo
        self._lock = threading.RLock()
        self._cancelled = cancelled
        self._last_poll = float("-inf")
        self._running = 0
        self._cancelled_runs = 0
        self._finished = not shards
        self._warned = False
        # Array tasks (global index) not yet seen to leave the queue.
        self._unresolved: set[int] = set()
        for _job, offset, count in shards:
            self._unresolved.update(range(offset, offset + count))
        self._global_of = {job: offset for job, offset, _count in shards}
        self.paths = SubmissionPaths.of(store, submission, submit_dir)

    @property
    def tracks_store(self) -> bool:
        """Always True: runs execute on the cluster and report through the store."""
        return True

    @property
    def job_ids(self) -> list[str]:
        """SLURM job ids of the arrays, in shard order."""
        return [job for job, _offset, _count in self.shards]

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
            "tasks_key": tasks_key(self.submission) if self._todo and self.shards else None,
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
    def _squeue(self) -> dict[int, str] | None:
        """Global array task -> state of our queued tasks; None when squeue failed."""
        try:
            done = _run_tool(["squeue", "--me", "-h", "-r", "-o", "%F %K %T"])
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._warn(f"squeue failed ({exc}); will retry")
            return None
        if done.returncode != 0:
            self._warn(f"squeue exited {done.returncode}: {done.stderr.strip()}; will retry")
            return None
        queued: dict[int, str] = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[0] not in self._global_of or not parts[1].isdigit():
                continue
            if parts[2] in _ACTIVE_STATES:
                queued[self._global_of[parts[0]] + int(parts[1])] = parts[2]
        return queued

    def _warn(self, message: str) -> None:
        # A transient scheduler hiccup must never fail runs; say it once, keep polling.
        if not self._warned:
            warnings.warn(f"metalab SLURM: {message}", RuntimeWarning, stacklevel=3)
            self._warned = True

    def poll(self, force: bool = False) -> None:
        """Refresh from ``squeue`` unless the last call was less than 2 s ago."""
        with self._lock:
            now = time.monotonic()
            if self._finished or (not force and now - self._last_poll < POLL_INTERVAL_S):
                return
            self._last_poll = now
            queued = self._squeue()
            if queued is None:
                return
            running_tasks = [g for g, state in queued.items() if state != "PENDING"]
            gone = [g for g in self._unresolved if g not in queued]
            # Markers are read after squeue answered: a task absent from the answer had
            # exited before, so every marker it wrote is already visible.
            self._resolve(gone)
            self._running = self._unfinished_count(running_tasks)
            if not self._unresolved:
                self._finished = True
                self._running = 0

    def _unfinished_count(self, global_tasks: list[int]) -> int:
        if not global_tasks:
            return 0
        run_ids = [self.plan.task(t).run_id for g in global_tasks for t in self._task_indices(g)]
        completed = self.store.completed(run_ids)
        failed = self.store.failed(run_ids)
        return sum(1 for c, f in zip(completed, failed, strict=True) if not c and not f)

    def _resolve(self, gone: list[int]) -> None:
        """Account for array tasks that left the queue; unfinished runs crashed."""
        if not gone:
            return
        owners = [(g, self.plan.task(t)) for g in gone for t in self._task_indices(g)]
        run_ids = [task.run_id for _g, task in owners]
        completed = self.store.completed(run_ids)
        failed = self.store.failed(run_ids)
        for (g, task), is_done, is_failed in zip(owners, completed, failed, strict=True):
            if is_done or is_failed:
                continue
            if self._cancelled:
                self._cancelled_runs += 1
                continue
            self._record_crash(task, g)
        self._unresolved.difference_update(gone)
        if not self._unresolved:
            self.paths.release()  # no task of ours can start any more

    def _record_crash(self, task: Any, global_task: int) -> None:
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
        # The worker's own reason (e.g. a refused login) or slurmstepd's (oom-kill, time
        # limit) when the log ends with one, rather than a guess.
        why = "killed, out of memory or out of time?"
        if last is not None:
            known = last.startswith(("metalab.worker:", "slurmstepd:"))
            why = f"its log ends with: {last}" if known else f"{why} its log ends with: {last}"
        error = WorkerCrashedError(
            f"SLURM array task of run {task.run_id} (task {task.task_index}) left the queue "
            f"before finishing it ({why}); {where}"
        )
        record = failure_record(self.plan, task, error, EXECUTOR_NAME, worker_identity("monitor"))
        persist(self.store, record)

    # -- Launch API -----------------------------------------------------------------------
    def counts(self) -> LaunchCounts:
        """Running runs (from squeue, throttled) and runs cancelled with the submission."""
        self.poll()
        with self._lock:
            return LaunchCounts(running=self._running, cancelled=self._cancelled_runs)

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
            pause = max(self._last_poll + POLL_INTERVAL_S - now, 0.05)
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)

    def cancel(self) -> None:
        """``scancel`` every array of the submission; unfinished runs count as cancelled.

        Raises:
            SlurmError: scancel is missing or failed.
        """
        with self._lock:
            self._cancelled = True
        self.store.put_blob(cancelled_key(self.submission), b"1")
        if not self.shards:
            return
        done = _run_tool(["scancel", *self.job_ids])
        if done.returncode != 0:
            raise SlurmError(f"scancel {' '.join(self.job_ids)} failed: {done.stderr.strip()}")


def reattach(pointer: dict[str, Any], store: Store) -> SlurmLaunch:
    """Rebuild the launch saved in a launch blob (``metalab.reconnect``).

    Raises:
        StoreError: the spec or the task list of the submission is missing.
        SignatureError: the spec was not sealed by this account; it was not unpickled.
    """
    from metalab.errors import StoreError
    from metalab.runner import spec_key
    from metalab.spec import experiment_from_spec, spec_from_bytes

    experiment = pointer["experiment_id"]
    spec_blob = store.get_blob(spec_key(experiment))
    if spec_blob is None:
        raise StoreError(f"store {store.locator} lacks the spec of {experiment}")
    spec = spec_from_bytes(spec_blob, experiment, f"spec blob of {experiment} in {store.locator}")
    plan = RunPlan(experiment_from_spec(spec), context_fp=spec["context_fingerprint"])
    submission = pointer["submission"]
    todo: Sequence[int] | None = None
    shards = [(str(job), int(offset), int(count)) for job, offset, count in pointer["shards"]]
    # Pointers written before the fix above name a task list for an empty submission:
    # without shards the list is never read, so its absence is not an error.
    if pointer.get("tasks_key") and shards:
        data = store.get_blob(pointer["tasks_key"])
        if data is None:
            raise StoreError(f"store {store.locator} lacks blob {pointer['tasks_key']}")
        todo = decode_task_list(data)
    return SlurmLaunch(
        store=store,
        plan=plan,
        submission=submission,
        shards=shards,
        runs_per_task=int(pointer["runs_per_task"]),
        todo=todo,
        n_todo=int(pointer["n_todo"]),
        cancelled=store.get_blob(cancelled_key(submission)) is not None,
    )
