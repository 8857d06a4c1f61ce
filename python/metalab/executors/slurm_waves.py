"""Waves: a submission larger than the user's submit limit, released by the cluster itself.

When :func:`metalab.executors.slurm_layout.plan_layout` cuts a submission into waves,
:meth:`SlurmExecutor.launch` submits the first wave's arrays and then one small **wave
job** (a one-task array, so that the launch's one ``squeue`` per poll sees it) with
``--dependency=afterany:<the wave's arrays>``. When they have ended it runs ``python -m
metalab.executors.slurm_wave_job`` (:mod:`metalab.executors.slurm_wave_job`), which submits
the runs not yet submitted — laid out again against the limits and the queue as they are
then, so the next wave brings its own wave job — and writes the new submission's launch
info to blob ``slurm-<submission>-next``, which a watching (or later reconnected) launch
follows (:class:`WaveFollower`).

No process has to stay alive between waves, and the limit holds at every moment: a wave
leaves room for its wave job (see ``slurm_layout.WAVE_RESERVE``). Nothing is submitted
after the submission was cancelled. This module is what the submitting side needs: the
wave job's settings, script and submission, and the follower.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from metalab.executors.slurm_config import EXECUTOR_NAME, SlurmConfig, config_to_json
from metalab.executors.slurm_paths import SubmissionPaths
from metalab.executors.slurm_script import follow_up_script
from metalab.executors.slurm_tasks import decode_task_list, encode_task_list
from metalab.keys import slurm_cancelled_key, slurm_next_key, slurm_rest_key, slurm_waves_key

if TYPE_CHECKING:
    from metalab.executors.slurm_launch import SlurmLaunch
    from metalab.plan import RunPlan
    from metalab.store.base import Store

    Reattach = Callable[[dict[str, Any], Store, RunPlan], SlurmLaunch]

__all__ = [
    "WaveFollower",
    "next_key",
    "rest_key",
    "submit_wave_job",
    "wave_paths",
    "wave_script",
    "waves_key",
]

WAVE_JOB_TIME = "20:00"
"""Walltime of a wave job (it reads the store, lays out the rest and calls sbatch)."""
WAVE_JOB_MEMORY = "1G"
_MODULE = "metalab.executors.slurm_wave_job"

# The blob keys of a submission's waves (one rule for every SLURM key: metalab.keys).
waves_key = slurm_waves_key
rest_key = slurm_rest_key
next_key = slurm_next_key


def wave_script(config: SlurmConfig, *, python: str, argv: Sequence[str], name: str) -> str:
    """The batch script of a wave job (:data:`WAVE_JOB_TIME`, :data:`WAVE_JOB_MEMORY`)."""
    return follow_up_script(
        config,
        name=name,
        time=WAVE_JOB_TIME,
        memory=WAVE_JOB_MEMORY,
        purpose="submits the next wave of a submission.",
        command=[python, "-m", _MODULE, *argv],
    )


def wave_paths(store: Store, submission: str, submit_dir: str | None = None) -> SubmissionPaths:
    """The wave job's private files (its own password file; logs go with the arrays')."""
    return SubmissionPaths(f"{submission}-wave", None, submit_dir)


def submit_wave_job(
    config: SlurmConfig,
    *,
    store: Store,
    plan: RunPlan,
    submission: str,
    rest: Sequence[int],
    after: Sequence[str],
    python: str,
    timeout: float | None,
    derived_key: str | None,
    job_name: str,
    output: str | None,
    passfile: str | None,
) -> str:
    """Save what the wave job needs and submit it after ``after``; return its job id.

    Raises:
        SlurmError: sbatch refused the wave job (the caller cancels the wave's arrays).
    """
    from metalab.executors.slurm_commands import command_error, run_tool

    settings = {
        "experiment_id": plan.experiment_id,
        "config": config_to_json(config),
        "python": python,
        "timeout": timeout,
        "derived_key": derived_key,
    }
    store.put_blob(rest_key(submission), encode_task_list(rest))
    store.put_blob(waves_key(submission), json.dumps(settings).encode())
    argv = ["--store", store.locator, "--experiment", plan.experiment_id]
    argv += ["--submission", submission]
    if passfile is not None:
        argv += ["--passfile", passfile]
    script = wave_script(config, python=python, argv=argv, name=f"{job_name}-wave")
    sbatch = ["sbatch", "--parsable", "--array=0", "--kill-on-invalid-dep=no"]
    sbatch.append("--dependency=afterany:" + ":".join(after))
    if output is not None:
        sbatch.append(f"--output={output}")
    done = run_tool(sbatch, stdin=script)
    if done.returncode != 0:
        raise command_error(f"sbatch refused the wave job of {submission}", done)
    return done.stdout.strip().split(";")[0]


class WaveFollower:
    """A launch's view of its wave job and of the submission that job made.

    Args:
        launch: the launch whose wave job this is.
        job_id: the wave job's id.
        reattach: rebuilds a launch from the launch info the wave job wrote
            (``slurm_launch.reattach``, handed in so that this module does not import it).
    """

    TASK = -2
    """Key of the wave job in the launch's ``squeue`` answer (a one-task array)."""

    def __init__(self, launch: SlurmLaunch, job_id: str, reattach: Reattach) -> None:
        self.launch = launch
        self.job_id = job_id
        self._reattach = reattach
        self.child: SlurmLaunch | None = None
        self._waiting = True
        self.unreleased = 0
        """Runs the wave job never submitted (it failed or the submission was cancelled)."""
        self._cancelled_unreleased = 0

    @property
    def job_ids(self) -> list[str]:
        """The wave job, then every job of the next waves."""
        return [self.job_id] + (self.child.job_ids if self.child is not None else [])

    def update(self, queued: bool) -> bool:
        """Follow the next waves; True once nothing of them can run any more.

        Args:
            queued: whether the wave job was in the launch's latest ``squeue`` answer.
        """
        launch = self.launch
        if self._waiting:
            if queued:
                return False
            # The job wrote the blob before it exited, so leaving the queue makes it visible.
            self._waiting = False
            raw = launch.store.get_blob(next_key(launch.submission))
            info = json.loads(raw) if raw else {}
            if info.get("launch"):
                pointer = {"experiment_id": launch.plan.experiment_id, **info["launch"]}
                self.child = self._reattach(pointer, launch.store, launch.plan)
            else:
                self._unreleased(info.get("error"), bool(info.get("cancelled")))
        if self.child is None:
            return True
        self.child.poll()
        return self.child.finished

    def _unreleased(self, error: str | None, cancelled: bool) -> None:
        """Runs the wave job did not submit: failure records, unless cancelled."""
        from metalab.errors import WorkerCrashedError
        from metalab.execution import failure_record, persist, worker_identity

        launch = self.launch
        data = launch.store.get_blob(rest_key(launch.submission))
        rest = decode_task_list(data) if data is not None else []
        self.unreleased = len(rest)
        if cancelled or launch.store.get_blob(slurm_cancelled_key(launch.submission)) is not None:
            self._cancelled_unreleased = len(rest)
            return
        why = error or "it ended without a word (killed? see its log wave.out)"
        for index in rest:
            task = launch.plan.task(int(index))
            exc = WorkerCrashedError(
                f"run {task.run_id} (task {task.task_index}) was never submitted: the wave "
                f"job {self.job_id} of submission {launch.submission} failed: {why}"
            )
            record = failure_record(
                launch.plan, task, exc, EXECUTOR_NAME, worker_identity("monitor")
            )
            persist(launch.store, record)

    def cancelled(self) -> int:
        """Runs of the next waves cancelled with the submission (submitted or not)."""
        if self.child is not None:
            return self.child.counts().cancelled
        return self._cancelled_unreleased

    def running(self) -> int:
        """Runs executing in the next waves."""
        return self.child.counts().running if self.child is not None else 0

    def cancel(self) -> None:
        """Cancel the next waves; the caller scancels :attr:`job_ids` (the wave job too).

        A wave job that already ran may have submitted the next wave without this launch
        having looked yet: its blob is read now so that wave is cancelled as well.
        """
        if self.child is None and self._waiting:
            raw = self.launch.store.get_blob(next_key(self.launch.submission))
            info = json.loads(raw) if raw else {}
            if info.get("launch"):
                pointer = {"experiment_id": self.launch.plan.experiment_id, **info["launch"]}
                self.child = self._reattach(pointer, self.launch.store, self.launch.plan)
                self._waiting = False
        if self.child is not None:
            self.child.cancel()
