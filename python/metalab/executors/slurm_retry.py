"""Retries of what the infrastructure broke, decided on the cluster (no driver needed).

With ``SlurmConfig(retries=N)``, every submission is followed by one small **retry job**
(``sbatch --dependency=afterany:<its arrays>``, a one-task array so that the launch's one
``squeue`` per poll sees it). When the arrays have ended it runs
``python -m metalab.executors.slurm_retry_job`` (:mod:`metalab.executors.slurm_retry_job`),
which records why the unfinished tasks ended, resubmits the runs the infrastructure broke
(:data:`RETRYABLE`) with escalated resources (:func:`escalate`: ``memory`` times 2 after
``out_of_memory``, ``time`` times 1.5 after ``timeout``) and ``retries - 1``, and writes
the new submissions' launch info to the blob ``slurm-<submission>-retried``, which a
watching (or later reconnected) launch follows through :class:`RetryFollower`.

This module is what the submitting side needs: the policy, the retry job's script and
submission, and the follower. The submission's settings travel in the blob
``slurm-<submission>-retry`` (JSON).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from metalab.executors.slurm_config import SlurmConfig, config_to_json, parse_memory, parse_time
from metalab.executors.slurm_script import follow_up_script
from metalab.keys import slurm_retried_key as retried_key
from metalab.keys import slurm_retry_key as retry_key
from metalab.records import FailureReason

if TYPE_CHECKING:
    from metalab.executors.slurm_launch import SlurmLaunch
    from metalab.plan import RunPlan
    from metalab.store.base import Store

    Reattach = Callable[[dict[str, Any], Store, RunPlan], SlurmLaunch]

__all__ = [
    "RETRYABLE",
    "RetryFollower",
    "escalate",
    "format_time",
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
_MODULE = "metalab.executors.slurm_retry_job"


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


def retry_script(config: SlurmConfig, *, python: str, argv: Sequence[str], name: str) -> str:
    """The batch script of a retry job (:data:`RETRY_JOB_TIME`, :data:`RETRY_JOB_MEMORY`)."""
    return follow_up_script(
        config,
        name=name,
        time=RETRY_JOB_TIME,
        memory=RETRY_JOB_MEMORY,
        purpose="retries the runs the infrastructure broke.",
        command=[python, "-m", _MODULE, *argv],
    )


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
        reattach: rebuilds a launch from the launch info the retry job wrote
            (``slurm_launch.reattach``, handed in so that this module does not import it).
    """

    TASK = -1
    """Key of the retry job in the launch's ``squeue`` answer (a one-task array)."""

    def __init__(self, launch: SlurmLaunch, job_id: str, reattach: Reattach) -> None:
        self.launch = launch
        self.job_id = job_id
        self._reattach = reattach
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
                self._reattach({**pointer, **info}, launch.store, launch.plan) for info in infos
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
