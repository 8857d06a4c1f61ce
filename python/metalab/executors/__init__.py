"""Executors: where runs execute (threads, processes, SLURM job arrays)."""

from metalab.executors.base import Executor, Job, Launch, LaunchCounts
from metalab.executors.thread import ThreadExecutor

__all__ = ["Executor", "Job", "Launch", "LaunchCounts", "ThreadExecutor"]
