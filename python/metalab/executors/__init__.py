"""Executors: where runs execute (threads, processes, SLURM job arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab import lazy_exports

if TYPE_CHECKING:
    # The type checker sees the real classes; at runtime they load on first use (below).
    from metalab.executors.base import Executor, Launch, LaunchCounts
    from metalab.executors.job import Job
    from metalab.executors.process import ProcessExecutor
    from metalab.executors.slurm import SlurmExecutor
    from metalab.executors.slurm_config import SlurmConfig
    from metalab.executors.thread import ThreadExecutor

__all__ = [
    "Executor",
    "Job",
    "Launch",
    "LaunchCounts",
    "ProcessExecutor",
    "SlurmConfig",
    "SlurmExecutor",
    "ThreadExecutor",
]

# Every name loads on first use: a SLURM array task imports modules of this package
# (its signal handling, task list, claims) and needs none of the launch machinery, and
# the process and SLURM executors pull in multiprocessing and subprocess plumbing that a
# thread-only user never needs.
_LAZY = {
    "Executor": "metalab.executors.base",
    "Job": "metalab.executors.job",
    "Launch": "metalab.executors.base",
    "LaunchCounts": "metalab.executors.base",
    "ProcessExecutor": "metalab.executors.process",
    "SlurmConfig": "metalab.executors.slurm_config",
    "SlurmExecutor": "metalab.executors.slurm",
    "ThreadExecutor": "metalab.executors.thread",
}


__getattr__ = lazy_exports.loader(__name__, _LAZY)
