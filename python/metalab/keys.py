"""Blob keys: the one place that names what metalab keeps in a store's blob area.

Stores validate keys (:func:`metalab.store.layout.check_blob_key`) and decide where blobs
live; this module only decides their names, so the writer (``metalab.run``, the SLURM
executor) and every reader (workers, ``reconnect``, the CLI) agree by construction. It
imports nothing from metalab: every layer may use it.

=====================================  ==========================================
key                                    content
=====================================  ==========================================
``spec-<experiment>.json``             sealed worker spec (:func:`spec_key`)
``launch-<experiment>.json``           latest launch pointer of one experiment
``launch-latest.json``                 latest launch pointer of the whole store
``done-proof-<experiment>.json``       proof that every run of a plan is done (FileStore)
``slurm-<submission>-tasks``           task indices of a partial submission
``slurm-<submission>-derived``         sealed derived-metric functions
``slurm-<submission>-cancelled``       present once the submission was cancelled
``slurm-<submission>-resolved``        present once every task left the queue, accounted for
``slurm-<submission>-retry``           retry settings of the submission (JSON)
``slurm-<submission>-retried``         launch info of the resubmissions its retry job made
``slurm-<submission>-waves``           wave settings of the submission (JSON)
``slurm-<submission>-rest``            task indices its wave job submits (uint32 LE)
``slurm-<submission>-next``            launch info of the submission its wave job made
``checkpoint-<run_id>``                a run's latest checkpoint
=====================================  ==========================================
"""

from __future__ import annotations

__all__ = [
    "checkpoint_key",
    "done_proof_key",
    "launch_key",
    "slurm_cancelled_key",
    "slurm_derived_key",
    "slurm_next_key",
    "slurm_resolved_key",
    "slurm_rest_key",
    "slurm_retried_key",
    "slurm_retry_key",
    "slurm_tasks_key",
    "slurm_waves_key",
    "spec_key",
]


def spec_key(experiment_id: str) -> str:
    """Blob key of an experiment's worker spec."""
    return f"spec-{experiment_id}.json"


def launch_key(experiment_id: str | None = None) -> str:
    """Blob key of the latest launch (of one experiment, or of the whole store)."""
    return f"launch-{experiment_id}.json" if experiment_id else "launch-latest.json"


def done_proof_key(experiment_id: str) -> str:
    """Blob key of the proof that every run of an experiment's plan is done (written by a
    FileStore resume that scanned them all, see :mod:`metalab.store.done_proof`)."""
    return f"done-proof-{experiment_id}.json"


def _slurm(submission: str, part: str) -> str:
    # The one rule of per-submission blobs: a submission's blobs sort together.
    return f"slurm-{submission}-{part}"


def slurm_resolved_key(submission: str) -> str:
    """Blob key present once every array task of a submission (without retry or wave job)
    left the queue and its unfinished runs were recorded: a reconnect need not look again."""
    return _slurm(submission, "resolved")


def slurm_tasks_key(submission: str) -> str:
    """Blob key of a SLURM submission's task list (little-endian uint32 indices)."""
    return _slurm(submission, "tasks")


def slurm_derived_key(submission: str) -> str:
    """Blob key of a SLURM submission's sealed derived-metric functions."""
    return _slurm(submission, "derived")


def slurm_cancelled_key(submission: str) -> str:
    """Blob key written when a SLURM submission was cancelled (seen by reconnected handles)."""
    return _slurm(submission, "cancelled")


def slurm_retry_key(submission: str) -> str:
    """Blob key of a SLURM submission's retry settings (JSON)."""
    return _slurm(submission, "retry")


def slurm_retried_key(submission: str) -> str:
    """Blob key of the launch info of the resubmissions a retry job made (JSON list)."""
    return _slurm(submission, "retried")


def slurm_waves_key(submission: str) -> str:
    """Blob key of a SLURM submission's wave settings (JSON)."""
    return _slurm(submission, "waves")


def slurm_rest_key(submission: str) -> str:
    """Blob key of the task indices a submission's wave job submits (uint32 LE)."""
    return _slurm(submission, "rest")


def slurm_next_key(submission: str) -> str:
    """Blob key of the launch info of the submission a wave job made (JSON)."""
    return _slurm(submission, "next")


def checkpoint_key(run_id: str) -> str:
    """Blob key of a run's latest checkpoint (:mod:`metalab.capture.checkpoint`)."""
    return f"checkpoint-{run_id}"
