"""The run plan: every task of an experiment, its run ID and how to rebuild it.

Task ``t`` runs parameter configuration ``t // R`` with replicate ``t % R`` (``R`` =
replicates). All run IDs are computed in one batched Rust call.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from metalab import _core
from metalab.context import resolve_context
from metalab.experiment import Experiment
from metalab.identity import fingerprint
from metalab.seeds import SeedBundle

__all__ = ["RunPlan", "TaskIdentity"]


@dataclass(frozen=True)
class TaskIdentity:
    """Everything that identifies one task of a plan."""

    task_index: int
    param_index: int
    replicate: int
    params: dict[str, Any]
    params_fp: str
    seed_fp: str
    run_id: str


class RunPlan:
    """An experiment with its context resolved: ready to enumerate and execute tasks.

    Raises (at construction):
        ContextError: a FilePath/DirPath of the context is missing.
        EncodingError: the context cannot be fingerprinted.
    """

    def __init__(self, experiment: Experiment, context_fp: str | None = None) -> None:
        self.experiment = experiment
        self.context_fp = context_fp or resolve_context(experiment.context)
        self.replicates = experiment.seeds.replicates
        self.seed_fps = experiment.seeds.fingerprints()

    @property
    def experiment_id(self) -> str:
        """``"{name}:{version}"`` of the experiment."""
        return self.experiment.experiment_id

    @property
    def total(self) -> int:
        """Number of tasks."""
        return self.experiment.total_runs

    @functools.cached_property
    def _param_fps(self) -> list[str]:
        # Shared by run_ids and run_set_key: fingerprinting 100,000 grid points costs
        # ~0.02 s, paid once per plan.
        fps: list[str] = self.experiment.params.fingerprints()
        return fps

    @functools.cached_property
    def run_ids(self) -> list[str]:
        """Run ID of every task, in task order (one batched Rust call)."""
        return _core.plan_run_ids(
            self.experiment_id,
            self.context_fp,
            self._param_fps,
            self.seed_fps,
        )

    @functools.cached_property
    def run_set_key(self) -> str:
        """A digest of everything the run IDs are computed from, in task order.

        Two plans with the same key have the same run IDs, so a fact stored about one
        plan's runs (``metalab.store.done_proof``) can be checked against another without
        computing its run IDs (0.1 s at 300,000 runs; the key costs ~0.01 s).
        """
        digest = hashlib.sha256()
        for part in (_core.__version__, self.experiment_id, self.context_fp):
            digest.update(part.encode() + b"\0")
        digest.update(f"{len(self._param_fps)}:{len(self.seed_fps)}\0".encode())
        # Fingerprints are hex digests: "\n" cannot occur inside one.
        digest.update("\n".join(self._param_fps).encode() + b"\0")
        digest.update("\n".join(self.seed_fps).encode())
        return digest.hexdigest()

    def task(self, task_index: int) -> TaskIdentity:
        """Compute one task's identity in O(1), without the whole plan.

        Raises:
            IndexError: ``task_index`` is outside ``[0, total)``.
        """
        if not 0 <= task_index < self.total:
            raise IndexError(f"task index {task_index} out of range for {self.total} tasks")
        param_index, replicate = divmod(task_index, self.replicates)
        params = self.experiment.params[param_index]
        params_fp = fingerprint(params)
        seed_fp = self.seed_fps[replicate]
        run_id = _core.run_id(self.experiment_id, self.context_fp, params_fp, seed_fp)
        return TaskIdentity(task_index, param_index, replicate, params, params_fp, seed_fp, run_id)

    def seed_bundle(self, replicate: int) -> SeedBundle:
        """The seed bundle of a replicate."""
        return self.experiment.seeds.bundle(replicate)
