"""Retries of what the infrastructure broke, decided on the cluster (no driver needed).

With ``SlurmConfig(retries=N)``, every submission is followed by one small **retry job**
(``sbatch --dependency=afterany:<its arrays>``, a one-task array so that the launch's one
``squeue`` per poll sees it). When the arrays have ended it runs
``python -m metalab.executors.slurm_retry``, which:

1. records, for array tasks that left the queue without finishing their runs, why
   (``sacct`` or the task's log, :mod:`metalab.executors.slurm_reasons`) — what the
   submitting process does too when it is alive, so nothing depends on it;
2. reads the reason of every run of the submission that did not succeed and keeps those
   the infrastructure broke (:data:`RETRYABLE`; ``exception`` too with
   ``retry_exceptions=True``; never ``cancelled``, nor anything once the submission was
   cancelled);
3. resubmits them through :class:`~metalab.executors.slurm.SlurmExecutor` with escalated
   resources — ``memory`` times 2 for runs that ran out of memory, ``time`` times 1.5 for runs that
   timed out — and ``retries - 1``, so the resubmission brings its own retry job;
4. writes the new submissions' launch info to the blob ``slurm-<submission>-retried``,
   which a watching (or later reconnected) launch follows.

The submission's settings travel in the blob ``slurm-<submission>-retry`` (JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from metalab.errors import SlurmConfigError, SlurmError
from metalab.executors.slurm_config import SlurmConfig, parse_memory, parse_time
from metalab.keys import slurm_retried_key as retried_key
from metalab.keys import slurm_retry_key as retry_key
from metalab.records import FailureReason, StoredState

if TYPE_CHECKING:
    from metalab.executors.slurm_launch import SlurmLaunch
    from metalab.plan import RunPlan
    from metalab.store.base import Store

__all__ = [
    "RETRYABLE",
    "RetryFollower",
    "escalate",
    "format_time",
    "main",
    "retried_key",
    "retry_key",
    "retry_script",
    "scale_memory",
]

RETRYABLE = frozenset(
    {
        FailureReason.TIMEOUT,
        FailureReason.OUT_OF_MEMORY,
        FailureReason.PREEMPTED,
        FailureReason.NODE_FAIL,
        FailureReason.CRASHED,
    }
)
"""Reasons retried by default: the run's code was not at fault."""

MEMORY_FACTOR = 2
TIME_FACTOR = 1.5
RETRY_JOB_TIME = "15:00"
"""Walltime of the retry job itself (it reads the store and calls sbatch)."""
RETRY_JOB_MEMORY = "1G"
_MODULE = "metalab.executors.slurm_retry"
_SQUEUE_ATTEMPTS = 5


def scale_memory(memory: str, factor: int) -> str:
    """``memory`` (an sbatch ``--mem`` value) times ``factor``: ``"200M"``, 2 -> ``"400M"``."""
    normal = parse_memory(memory)
    return f"{int(normal[:-1]) * factor}{normal[-1]}"


def format_time(seconds: int) -> str:
    """An sbatch ``--time`` value for ``seconds``: ``H:MM:SS`` or ``D-HH:MM:SS``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


def escalate(config: SlurmConfig, reasons: set[FailureReason]) -> SlurmConfig:
    """The config of the next attempt of runs that ended for ``reasons``.

    Memory doubles after ``out_of_memory``, the walltime grows by half after ``timeout``
    (rounded up to a whole second); one retry fewer is left.
    """
    changes: dict[str, Any] = {"retries": max(config.retries - 1, 0)}
    if FailureReason.OUT_OF_MEMORY in reasons:
        changes["memory"] = scale_memory(config.memory, MEMORY_FACTOR)
    if FailureReason.TIMEOUT in reasons:
        changes["time"] = format_time(math.ceil(parse_time(config.time) * TIME_FACTOR))
    return dataclasses.replace(config, **changes)


def config_to_json(config: SlurmConfig) -> dict[str, Any]:
    """The fields of ``config`` as plain JSON values."""
    return dataclasses.asdict(config)


def config_from_json(data: Any) -> SlurmConfig:
    """Rebuild a :class:`SlurmConfig` (validated again) from :func:`config_to_json`.

    Raises:
        SlurmConfigError: ``data`` is not the fields of a SlurmConfig.
    """
    names = {f.name for f in dataclasses.fields(SlurmConfig)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise SlurmConfigError(f"retry settings hold no SlurmConfig fields: {data!r}")
    return SlurmConfig(**data)


def retry_script(config: SlurmConfig, *, python: str, argv: Sequence[str], name: str) -> str:
    """The batch script of a retry job: the config's environment, then the retry module.

    The same ``modules``/``conda_env``/``setup`` lines as the array tasks, so it finds the
    same interpreter; small fixed resources of its own (:data:`RETRY_JOB_TIME`,
    :data:`RETRY_JOB_MEMORY`, one CPU, no GPU).
    """
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={q(name)}",
        f"#SBATCH --time={RETRY_JOB_TIME}",
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --mem={RETRY_JOB_MEMORY}",
    ]
    if not config.uses_default_partition:
        lines.append(f"#SBATCH --partition={q(config.partition)}")
    lines += [
        "# Generated by metalab: retries the runs the infrastructure broke.",
        "set -eo pipefail",
    ]
    lines += [f"module load {q(module)}" for module in config.modules]
    if config.conda_env is not None:
        lines += ['eval "$(conda shell.bash hook)"', f"conda activate {q(config.conda_env)}"]
    lines += list(config.setup)
    lines.append("exec " + " ".join(q(part) for part in [python, "-m", _MODULE, *argv]))
    return "\n".join(lines) + "\n"


def submit_retry_job(
    config: SlurmConfig,
    *,
    store: Store,
    launch: SlurmLaunch,
    python: str,
    timeout: float | None,
    derived_key: str | None,
    job_name: str,
    output: str | None,
    passfile: str | None,
) -> str:
    """Save the submission's retry settings and submit its retry job; return its job id.

    Raises:
        SlurmError: sbatch refused the retry job (the caller cancels the arrays).
    """
    from metalab.executors.slurm_commands import command_error, run_tool

    settings = {
        "experiment_id": launch.plan.experiment_id,
        "launch": launch.reconnect_info,
        "config": config_to_json(config),
        "python": python,
        "timeout": timeout,
        "derived_key": derived_key,
        "submit_dir": launch.paths.submit_dir,
    }
    store.put_blob(retry_key(launch.submission), json.dumps(settings).encode())
    argv = ["--store", store.locator, "--submission", launch.submission]
    argv += ["--experiment", launch.plan.experiment_id]
    if passfile is not None:
        argv += ["--passfile", passfile]
    script = retry_script(config, python=python, argv=argv, name=f"{job_name}-retry")
    sbatch = ["sbatch", "--parsable", "--array=0", "--kill-on-invalid-dep=no"]
    sbatch.append("--dependency=afterany:" + ":".join(launch.job_ids))
    if output is not None:
        sbatch.append(f"--output={output}")
    done = run_tool(sbatch, stdin=script)
    if done.returncode != 0:
        raise command_error(f"sbatch refused the retry job of {launch.submission}", done)
    return done.stdout.strip().split(";")[0]


class RetryFollower:
    """A launch's view of its retry job and of the resubmissions that job made.

    Args:
        launch: the launch whose submission the retry job retries.
        job_id: the retry job's id.
    """

    TASK = -1
    """Key of the retry job in the launch's ``squeue`` answer (a one-task array)."""

    def __init__(self, launch: SlurmLaunch, job_id: str) -> None:
        self.launch = launch
        self.job_id = job_id
        self.children: list[SlurmLaunch] = []
        self._waiting = True

    @property
    def job_ids(self) -> list[str]:
        """The retry job, then every job of the resubmissions (and of their retries)."""
        return [self.job_id] + [job for child in self.children for job in child.job_ids]

    def update(self, queued: bool) -> bool:
        """Follow the retries; True once nothing of them can run any more.

        Args:
            queued: whether the retry job was in the launch's latest ``squeue`` answer.
        """
        from metalab.executors.slurm_launch import reattach

        if self._waiting:
            if queued:
                return False
            # The job wrote the blob before it exited, so leaving the queue makes it visible.
            self._waiting = False
            launch = self.launch
            raw = launch.store.get_blob(retried_key(launch.submission))
            infos = json.loads(raw) if raw else []
            pointer = {"experiment_id": launch.plan.experiment_id}
            self.children = [
                reattach({**pointer, **info}, launch.store, launch.plan) for info in infos
            ]
        for child in self.children:
            child.poll()
        return all(child.finished for child in self.children)

    def running(self) -> int:
        """Runs executing in the resubmissions."""
        return sum(child.counts().running for child in self.children)

    def cancel(self) -> None:
        """Mark the resubmissions cancelled (the caller scancels :attr:`job_ids`)."""
        for child in self.children:
            child.cancel()


def _record_crashes(launch: SlurmLaunch) -> None:
    """Let the launch record why its unfinished tasks ended (all have: afterany)."""
    for attempt in range(_SQUEUE_ATTEMPTS):
        launch.poll(force=True)
        if launch.finished:
            return
        time.sleep(2.0 * (attempt + 1))  # squeue failed or lags: ask again, gently


def plan_retries(
    store: Store, plan: RunPlan, launch: SlurmLaunch, retry_exceptions: bool
) -> dict[frozenset[FailureReason], list[int]]:
    """Task indices to retry, grouped by the reasons that decide their escalation."""
    indices = launch.task_indices()
    run_ids = [plan.task(t).run_id for t in indices]
    states = store.states(run_ids)
    unfinished = [
        (t, r)
        for t, r, s in zip(indices, run_ids, states, strict=True)
        if s is not StoredState.DONE
    ]
    if not unfinished:
        return {}
    loaded = store.load_records(run_ids=[r for _t, r in unfinished]).records
    reasons = {record.run_id: record.reason for record in loaded}
    wanted = set(RETRYABLE) | ({FailureReason.EXCEPTION} if retry_exceptions else set())
    groups: dict[frozenset[FailureReason], list[int]] = {}
    for task_index, run_id in unfinished:
        # No record at all: the task died so hard that not even the crash was recorded.
        reason = reasons.get(run_id) or FailureReason.CRASHED
        if reason not in wanted:
            continue
        key = frozenset({reason} & {FailureReason.TIMEOUT, FailureReason.OUT_OF_MEMORY})
        groups.setdefault(key, []).append(task_index)
    return groups


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__)
    parser.add_argument("--store", required=True, help="store locator")
    parser.add_argument("--experiment", required=True, help="experiment id name:version")
    parser.add_argument("--submission", required=True, help="submission whose runs to retry")
    parser.add_argument("--passfile", default=None, help="password file of the store's logins")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Retry one submission's broken runs; return the exit status (0 also when none)."""
    args = _parse(argv)
    from metalab.executors.base import Job
    from metalab.executors.slurm import SlurmExecutor
    from metalab.executors.slurm_launch import reattach
    from metalab.keys import slurm_cancelled_key
    from metalab.plan_loading import load_plan
    from metalab.spec import derived_from_bytes
    from metalab.worker import _open_store

    store = _open_store(args.store, args.passfile)
    if store is None:
        return 2
    launched: list[dict[str, Any]] = []
    try:
        raw = store.get_blob(retry_key(args.submission))
        if raw is None:
            print(f"{_MODULE}: no retry settings for {args.submission}", file=sys.stderr)
            return 2
        settings = json.loads(raw)
        plan = load_plan(store, args.experiment)
        pointer = dict(settings["launch"], experiment_id=args.experiment)
        pointer.pop("retry_job", None)  # this process is that job: do not wait for itself
        launch = reattach(pointer, store, plan)
        if store.get_blob(slurm_cancelled_key(args.submission)) is not None:
            print(f"{_MODULE}: {args.submission} was cancelled: nothing is retried")
            return 0
        _record_crashes(launch)
        config = config_from_json(settings["config"])
        groups = plan_retries(store, plan, launch, config.retry_exceptions)
        key = settings.get("derived_key")
        blob = store.get_blob(key) if key else None
        derived = derived_from_bytes(blob, key) if key and blob is not None else []
        for reasons, indices in sorted(groups.items(), key=lambda item: sorted(item[0])):
            attempt = escalate(config, set(reasons))
            executor = SlurmExecutor(attempt, python=settings["python"])
            job = Job(plan, store, sorted(indices), derived, settings.get("timeout"))
            retry = executor.launch(job)
            launched.append(retry.reconnect_info)
            what = ", ".join(sorted(reasons)) or "other infrastructure failures"
            print(
                f"{_MODULE}: resubmitted {len(indices)} run(s) of {args.submission} "
                f"({what}) as {' '.join(retry.job_ids)} with time={attempt.time} "
                f"memory={attempt.memory}, {attempt.retries} retries left",
                flush=True,
            )
        store.put_blob(retried_key(args.submission), json.dumps(launched).encode())
        launch.paths.release()
    except SlurmError as exc:
        # What was resubmitted before the failure is still followed by watchers.
        store.put_blob(retried_key(args.submission), json.dumps(launched).encode())
        print(f"{_MODULE}: resubmission of {args.submission} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
