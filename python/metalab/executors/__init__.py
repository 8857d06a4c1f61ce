"""Executors: where runs execute (threads, processes, SLURM job arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The type checker sees the real classes; at runtime they load on first use (below).
    from metalab.executors.base import Executor, Job, Launch, LaunchCounts
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
    "Job": "metalab.executors.base",
    "Launch": "metalab.executors.base",
    "LaunchCounts": "metalab.executors.base",
    "ProcessExecutor": "metalab.executors.process",
    "SlurmConfig": "metalab.executors.slurm_config",
    "SlurmExecutor": "metalab.executors.slurm",
    "ThreadExecutor": "metalab.executors.thread",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'metalab.executors' has no attribute {name!r}")
