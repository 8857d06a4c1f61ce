"""An executor that leaves a store as a SLURM submission does, and runs nothing.

Tests of the SLURM worker (`python -m metalab.worker`) need a store holding what a real
submission writes — the manifest and the sealed spec — without sbatch: they then start
worker processes themselves, as array tasks would start.
"""

from __future__ import annotations

from metalab.executors.base import Executor, Job, Launch, TallyingLaunch

__all__ = ["SubmitOnly"]


class SubmitOnly(Executor):
    """Ships the experiment like SlurmExecutor (manifest, sealed spec); runs nothing."""

    name = "slurm"
    ships_experiment = True

    def launch(self, job: Job) -> Launch:
        launch = TallyingLaunch(job)
        launch.mark_finished()
        return launch
