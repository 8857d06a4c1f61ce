"""Run an experiment on a SLURM cluster as index-addressed job arrays.

Submission writes nothing per run: each array task recomputes its runs from
``SLURM_ARRAY_TASK_ID`` and the experiment spec that ``metalab.run`` stored (see
:mod:`metalab.worker`). When only some tasks remain (resume), their indices go into ONE
compact per-submission blob ``slurm-<submission>-tasks`` (little-endian uint32); when every
task runs, the mapping is the identity and nothing is written.

This module prepares and submits (:class:`SlurmExecutor`). Watching a submission —
status from the store's markers plus one throttled ``squeue`` per poll, failure records
for array tasks that left the queue unfinished, ``cancel`` and ``reattach`` — is
:mod:`metalab.executors.slurm_launch`; the SLURM commands themselves are
:mod:`metalab.executors.slurm_commands`; shards and ``max_concurrent``:
:mod:`metalab.executors.slurm_script`; log and password files:
:mod:`metalab.executors.slurm_paths`; blob names: :mod:`metalab.keys`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from metalab.errors import ExecutorError, SlurmError
from metalab.executors import slurm_limits
from metalab.executors.base import Executor, Job, Launch
from metalab.executors.slurm_commands import command_error, run_tool
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_held import LaunchPair, live_submission
from metalab.executors.slurm_launch import (
    EXECUTOR_NAME,
    POLL_INTERVAL_S,
    SlurmLaunch,
    decode_task_list,
    encode_task_list,
    reattach,
)
from metalab.executors.slurm_layout import Layout, measured_run_seconds, plan_layout
from metalab.executors.slurm_limits import SiteLimits
from metalab.executors.slurm_paths import SubmissionPaths
from metalab.executors.slurm_script import (
    Shard,
    job_name,
    plan_shards,
    render_script,
    sbatch_options,
)
from metalab.keys import slurm_cancelled_key as cancelled_key
from metalab.keys import slurm_derived_key as derived_key
from metalab.keys import slurm_tasks_key as tasks_key
from metalab.plan import RunPlan
from metalab.store import credentials
from metalab.store.base import Store

__all__ = [
    "POLL_INTERVAL_S",
    "SlurmConfig",
    "SlurmExecutor",
    "SlurmLaunch",
    "cancelled_key",
    "decode_task_list",
    "derived_key",
    "encode_task_list",
    "reattach",
    "tasks_key",
]


def _new_submission_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


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
    config: SlurmConfig
    """The executor's config fitted to the site (runs per task, array size)."""
    layout: Layout
    limits: SiteLimits
    rest: Sequence[int]
    """Task indices of the later waves (submitted by the wave job); empty: one wave."""


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
        # Fitted to the site before anything is written or submitted: a submission that
        # cannot fit raises SlurmConfigError here.
        # (A resubmission with nothing to do asks the cluster nothing: it stays instant.)
        limits, queued, run_s = SiteLimits(), None, None
        if job.task_indices:
            names = [] if self.config.uses_default_partition else self.config.partition.split(",")
            limits = slurm_limits.discover_for(names)
            queued = slurm_limits.queued_for(limits)
            run_s = measured_run_seconds(store, plan, job.task_indices)
        layout = plan_layout(
            len(job.task_indices),
            self.config,
            limits,
            queued=queued,
            run_seconds=run_s,
            followers=1 if self.config.retries else 0,
        )
        config = layout.config(self.config)
        # todo is a sorted subset: same size => all. The first wave of all tasks is the
        # identity's prefix, so it needs no task list either.
        identity = len(job.task_indices) == plan.total
        first = layout.wave_runs(len(job.task_indices))
        todo, rest = job.task_indices[:first], job.task_indices[first:]
        k = config.runs_per_task
        assert isinstance(k, int)  # resolved by the layout
        shards = plan_shards(-(-len(todo) // k), config)
        paths = SubmissionPaths.of(store, submission, os.getcwd())
        secrets = credentials.credentials_of(store)
        passfile = str(paths.passfile) if secrets else None
        scripts = [
            render_script(
                config,
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
        return _Submission(
            submission, todo, identity, shards, scripts, paths, secrets, config, layout, limits,
            rest,
        )  # fmt: skip

    def _sbatch_argv(self, prepared: _Submission, shard: Shard, after_job: str | None) -> list[str]:
        output = prepared.paths.output(shard.number)
        return ["sbatch", *sbatch_options(shard, output, after_job)]

    def describe(self, plan: RunPlan, store: Store, todo: list[int]) -> None:
        """Print what :meth:`launch` would submit (``metalab.run(..., dry_run=True)``)."""
        prepared = self._prepare(Job(plan, store, todo), "DRYRUN")
        k = prepared.config.runs_per_task
        n_tasks = sum(shard.count for shard in prepared.shards)
        print(f"SLURM dry run of {plan.experiment_id} into {store.locator}")
        print(f"  runs: {plan.total} total, {len(todo)} to run, {plan.total - len(todo)} done")
        for line in prepared.limits.describe():
            print(f"  site: {line}")
        for line in prepared.layout.describe():
            print(f"  {line}")
        wave = f" in the first of {prepared.layout.waves} waves" if prepared.rest else ""
        print(
            f"  array tasks: {n_tasks}{wave} ({k} run(s) per task), arrays: "
            f"{len(prepared.shards)} (max_array_size={prepared.config.max_array_size}, "
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
    def launch(self, job: Job) -> Launch:
        """Submit the job's tasks as array jobs and return at once.

        Runs held by a live earlier submission of the experiment (``slurm_held``) are
        left to it and followed, not submitted again.

        Raises:
            SlurmError: sbatch is missing or refused a shard (shards submitted before the
                failure are cancelled, so nothing half-submitted keeps running).
        """
        earlier = live_submission(job.store, job.plan) if job.task_indices else None
        if earlier is None:
            return self.submit(job)
        todo = [t for t in job.task_indices if t not in earlier.tasks]
        print(
            f"metalab SLURM: {len(job.task_indices) - len(todo)} runs already queued by "
            f"submission {earlier.submission}; submitting {len(todo)}",
            file=sys.stderr,
        )
        if not todo:
            return earlier.launch
        return LaunchPair(self.submit(dataclasses.replace(job, task_indices=todo)), earlier)

    def submit(self, job: Job) -> SlurmLaunch:
        """Submit every task of ``job`` (the retry and wave jobs, which continue a live
        submission, come here directly: the earlier submission they would find is theirs).

        Raises:
            SlurmError: as :meth:`launch`.
        """
        submission = _new_submission_id()
        prepared = self._prepare(job, submission)
        for note in prepared.layout.notes if prepared.shards else ():
            print(f"metalab SLURM: {note}", file=sys.stderr)  # said once, at submission
        store = job.store
        configs = store.connection_configs() if prepared.shards else []
        if configs:  # a PostgreSQL store: can its server admit that many tasks at once?
            from metalab.store.pg_capacity import admission_notes

            tasks = prepared.layout.wave_tasks
            concurrent = min(tasks, self.config.max_concurrent or tasks)
            for note in admission_notes(configs, concurrent):
                print(f"metalab SLURM: {note}", file=sys.stderr)
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
                    done = run_tool(argv, stdin=prepared.scripts[shard.number])
                except subprocess.TimeoutExpired as exc:
                    # sbatch retries forever while the controller is at MaxJobCount (array
                    # tasks count as jobs): fewer, packed tasks are the way out.
                    raise SlurmError(
                        f"sbatch of array {shard.number} did not answer in {exc.timeout:.0f}s "
                        f"(controller busy or MaxJobCount reached?); try a larger "
                        f"runs_per_task so that fewer array tasks are queued",
                        command=tuple(argv),
                    ) from exc
                if done.returncode != 0:
                    raise command_error(
                        f"sbatch refused array {shard.number} of {job.plan.experiment_id}", done
                    )
                job_ids.append(done.stdout.strip().split(";")[0])
            launch = self._launch_of(job, prepared, job_ids, None)
            if self.config.retries and job_ids:
                # Submitted last, after every array: it waits for all of them (afterany).
                job_ids.append(self._submit_retry(job, prepared, launch))
                launch = self._launch_of(job, prepared, job_ids[:-1], job_ids[-1])
            if prepared.rest:
                # After the arrays and the retry job: the next wave is laid out against a
                # queue that already holds the retries.
                arrays = job_ids[: len(prepared.shards)]
                retry_job = job_ids[-1] if len(job_ids) > len(arrays) else None
                job_ids.append(self._submit_wave(job, prepared, list(job_ids)))
                launch = self._launch_of(job, prepared, arrays, retry_job, job_ids[-1])
        except BaseException:
            if job_ids:
                run_tool(["scancel", *job_ids])
            prepared.paths.release()
            raise
        return launch

    def _launch_of(
        self,
        job: Job,
        prepared: _Submission,
        job_ids: list[str],
        retry_job: str | None,
        wave_job: str | None = None,
    ) -> SlurmLaunch:
        return SlurmLaunch(
            store=job.store,
            plan=job.plan,
            submission=prepared.submission,
            shards=[
                (jid, s.offset, s.count) for jid, s in zip(job_ids, prepared.shards, strict=True)
            ],
            runs_per_task=int(prepared.config.runs_per_task),
            todo=None if prepared.identity else prepared.todo,
            n_todo=len(prepared.todo),
            submit_dir=prepared.paths.submit_dir,
            retry_job=retry_job,
            wave_job=wave_job,
        )

    def _submit_wave(self, job: Job, prepared: _Submission, after: list[str]) -> str:
        """Submit the wave job that releases ``prepared.rest`` after ``after`` (slurm_waves)."""
        from metalab.executors.slurm_waves import submit_wave_job, wave_paths

        # The wave job's own password file: the arrays' one is removed when they end.
        paths = wave_paths(job.store, prepared.submission, prepared.paths.submit_dir)
        paths.create(prepared.secrets)
        try:
            return submit_wave_job(
                self.config,
                store=job.store,
                plan=job.plan,
                submission=prepared.submission,
                rest=prepared.rest,
                after=after,
                python=self.python,
                timeout=job.timeout,
                derived_key=derived_key(prepared.submission) if job.derived_metrics else None,
                job_name=job_name(job.plan.experiment.name, job.plan.run_ids),
                output=prepared.paths.wave_output,
                passfile=str(paths.passfile) if prepared.secrets else None,
            )
        except BaseException:
            paths.release()
            raise

    def _submit_retry(self, job: Job, prepared: _Submission, launch: SlurmLaunch) -> str:
        """Submit the retry job of ``SlurmConfig(retries=N)`` (see ``slurm_retry``)."""
        from metalab.executors.slurm_retry import submit_retry_job

        return submit_retry_job(
            self.config,
            store=job.store,
            launch=launch,
            python=self.python,
            timeout=job.timeout,
            derived_key=derived_key(prepared.submission) if job.derived_metrics else None,
            job_name=job_name(job.plan.experiment.name, job.plan.run_ids),
            output=prepared.paths.retry_output,
            passfile=str(prepared.paths.passfile) if prepared.secrets else None,
        )
