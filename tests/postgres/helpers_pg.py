"""Shared pieces of the PostgreSQL tests (not a test module)."""

from __future__ import annotations

import datetime as dt

import metalab
from metalab.records import RunRecord, RunState


@metalab.operation
def train(params, seeds, capture):  # type: ignore[no-untyped-def]
    """A small operation that uses every capture kind a store must persist."""
    import numpy as np

    capture.log("Starting training")
    for epoch in range(3):
        capture.metric("loss", 1.0 / (epoch + 1 + params["lr"]), step=epoch)
    capture.metric("score", params["lr"] * 2)
    capture.artifact("weights", np.arange(5, dtype=float))
    capture.log("Training complete")


def experiment(name: str = "pgexp", lrs: tuple[float, ...] = (0.1, 0.2)) -> metalab.Experiment:
    """A 2-replicate grid over ``lr`` running :func:`train`."""
    return metalab.Experiment(
        name=name,
        version="1.0",
        context={},
        operation=train,
        params=metalab.grid(lr=list(lrs)),
        seeds=metalab.seeds(base=7, replicates=2),
    )


def record(run_id: str, task_index: int = 0, experiment_id: str = "e:1") -> RunRecord:
    """A synthetic successful run record."""
    now = dt.datetime.now(dt.UTC)
    return RunRecord(
        run_id=run_id,
        experiment_id=experiment_id,
        status=RunState.SUCCESS,
        context_fingerprint="c" * 16,
        params_fingerprint="p" * 16,
        seed_fingerprint="s" * 16,
        params={"zeta": task_index, "alpha": 0.5},
        task_index=task_index,
        replicate=0,
        metrics={"loss": 0.25, "nan_metric": float("nan")},
        metric_series={"loss": [[0, 1.0], [1, 0.5]]},
        started_at=now,
        finished_at=now,
    )


@metalab.operation
def slow(params, capture):  # type: ignore[no-untyped-def]
    """Sleeps a little so a server can be stopped while runs are in flight."""
    import time

    capture.log(f"run {params['i']} starting")
    time.sleep(0.15)
    capture.metric("i", params["i"])
    capture.log(f"run {params['i']} done")
