"""Executors: where runs execute (threads, processes, SLURM job arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metalab.executors.base import Executor, Job, Launch, LaunchCounts
from metalab.executors.thread import ThreadExecutor

if TYPE_CHECKING:
    # The type checker sees the real classes; at runtime they load on first use (below).
    from metalab.executors.process import ProcessExecutor
    from metalab.executors.slurm import SlurmExecutor
    from metalab.executors.slurm_config import SlurmConfig

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


def __getattr__(name: str) -> Any:
    # The process and SLURM executors pull in multiprocessing and subprocess plumbing that
    # a thread-only user never needs: they load on first use.
    if name == "ProcessExecutor":
        from metalab.executors.process import ProcessExecutor

        return ProcessExecutor
    if name == "SlurmExecutor":
        from metalab.executors.slurm import SlurmExecutor

        return SlurmExecutor
    if name == "SlurmConfig":
        from metalab.executors.slurm_config import SlurmConfig

        return SlurmConfig
    raise AttributeError(f"module 'metalab.executors' has no attribute {name!r}")
