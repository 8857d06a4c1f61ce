"""What an executor is handed: tasks of a plan, where to store them, what to do after."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metalab.execution import DerivedFn
from metalab.plan import RunPlan
from metalab.records import RunRecord
from metalab.store.base import Store

__all__ = ["Job"]


@dataclass
class Job:
    """What to execute: tasks of a plan, where to store them, what to compute after.

    (A module of its own: a SLURM array task builds one for its claims and needs none of
    the launch machinery of :mod:`metalab.executors.base`.)
    """

    plan: RunPlan
    store: Store
    task_indices: list[int]
    derived_metrics: Sequence[DerivedFn] = ()
    timeout: float | None = None
    on_record: Callable[[RunRecord], None] | None = None
    redo_done: bool = False
    """True when runs already done are executed again (``resume=False``,
    ``rerun="stale"``); otherwise a run claimed here after another launch finished it
    is not executed again."""
