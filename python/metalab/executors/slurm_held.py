"""Runs held by a live SLURM submission, so a relaunch does not submit them again.

A submitted array's runs are not claimed until its tasks start (claims are taken where a
run executes), yet they are spoken for from the moment ``sbatch`` accepted them. A
second ``metalab.run(..., executor=SlurmExecutor(...))`` therefore reads the
experiment's launch pointer, asks ``squeue`` once whether any job of that submission
(arrays, retry job, wave job) is still queued or running, and if so leaves the
submission's runs to it: only runs neither done nor held are submitted, and the new
launch follows the old submission too, so its ``result()`` still has every run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from metalab.errors import MetalabError
from metalab.executors.base import Launch, LaunchCounts
from metalab.executors.slurm_commands import run_tool
from metalab.executors.slurm_launch import SlurmLaunch, reattach
from metalab.keys import launch_key
from metalab.plan import RunPlan
from metalab.records import StoredState
from metalab.store.base import Store

__all__ = ["HeldBy", "LaunchPair", "live_submission"]


class HeldBy:
    """A live earlier submission and the task indices it holds."""

    def __init__(self, launch: SlurmLaunch, pointer: dict[str, Any], tasks: set[int]) -> None:
        self.launch = launch
        self.pointer = pointer
        self.tasks = tasks

    @property
    def submission(self) -> str:
        """The earlier submission's id."""
        return str(self.pointer.get("submission", "?"))


def _pointer_jobs(pointer: dict[str, Any]) -> set[str]:
    jobs = {str(job) for job, _offset, _count in pointer.get("shards") or ()}
    jobs.update(str(j) for j in (pointer.get("retry_job"), pointer.get("wave_job")) if j)
    return jobs


def _queued_job_ids() -> set[str] | None:
    """Every job id of this user still in ``squeue`` (one call); None if it failed."""
    try:
        done = run_tool(["squeue", "--me", "-h", "-o", "%F %A"])
    except (MetalabError, OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return set(done.stdout.split())


def live_submission(store: Store, plan: RunPlan) -> HeldBy | None:
    """The experiment's last SLURM submission if one of its jobs is still queued.

    Pointers of a launch that followed an earlier one (``also``) are looked at too.
    Anything unreadable (no pointer, another executor, squeue failing) answers ``None``:
    then everything not done is submitted, as before claims existed.
    """
    try:
        data = store.get_blob(launch_key(plan.experiment_id))
        pointer = json.loads(data) if data else None
    except (MetalabError, ValueError):
        return None
    pointers: list[dict[str, Any]] = []
    while isinstance(pointer, dict) and pointer.get("executor") == "slurm":
        pointers.append(pointer)
        pointer = pointer.get("also")
    wanted = [p for p in pointers if p.get("shards")]
    if not wanted:
        return None
    queued = _queued_job_ids()
    if not queued:
        return None
    for candidate in wanted:
        if _pointer_jobs(candidate) & queued:
            try:
                launch = reattach(candidate, store, plan)
            except MetalabError:
                continue
            tasks = launch.task_indices()
            # A run the earlier submission already failed is not held: resume retries it.
            states = store.states([plan.run_ids[t] for t in tasks])
            held = {t for t, st in zip(tasks, states, strict=True) if st is not StoredState.FAILED}
            return HeldBy(launch, candidate, held)
    return None


class LaunchPair(Launch):
    """A new submission and the live earlier one it left runs to, followed as one."""

    def __init__(self, new: Launch, earlier: HeldBy) -> None:
        self.new = new
        self.earlier = earlier

    def counts(self) -> LaunchCounts:
        a, b = self.new.counts(), self.earlier.launch.counts()
        return LaunchCounts(
            running=a.running + b.running,
            succeeded=a.succeeded + b.succeeded,
            failed=a.failed + b.failed,
            cancelled=a.cancelled + b.cancelled,
        )

    def wait(self, timeout: float | None = None) -> bool:
        # Both are polled through the store; the second wait is short once the first is.
        if not self.new.wait(timeout):
            return False
        return self.earlier.launch.wait(timeout)

    def cancel(self) -> None:
        self.new.cancel()
        self.earlier.launch.cancel()

    @property
    def fatal_errors(self) -> list[BaseException]:
        return self.new.fatal_errors + self.earlier.launch.fatal_errors

    @property
    def tracks_store(self) -> bool:
        return True

    @property
    def job_ids(self) -> Sequence[str]:
        return [*self.new.job_ids, *self.earlier.launch.job_ids]

    @property
    def reconnect_info(self) -> dict[str, Any]:
        # The earlier submission rides along, so a third launch sees it still holds runs.
        return {**self.new.reconnect_info, "also": self.earlier.pointer}
