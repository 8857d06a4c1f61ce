"""A second SLURM submission while the first is queued submits nothing twice.

Executions are counted with a side file: the operation appends one line per execution
(``O_APPEND``, one ``write`` each), so a run executed by both submissions shows twice.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Any

import pytest

import metalab

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def counted_op(context: Any, params: Any, runtime: Any, capture: Any) -> None:
    """Append one line per execution, then take a little time."""
    fd = os.open(context["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{runtime.run_id}\n".encode())
    finally:
        os.close(fd)
    time.sleep(0.3)
    capture.metric("x", params["x"])


def _exp(tmp: Path, n: int) -> metalab.Experiment:
    return metalab.Experiment(
        name="double",
        version="1",
        context={"log": str(tmp / "executions.log")},
        operation=counted_op,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=5),
    )


def _executions(tmp: Path) -> collections.Counter[str]:
    log = tmp / "executions.log"
    return collections.Counter(log.read_text().split() if log.exists() else [])


def test_two_submissions_back_to_back_execute_each_run_once(
    tmp_path: Path, no_leftover_jobs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _exp(tmp_path, 8)
    store = str(tmp_path / "store")
    executor = metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5"))
    first = metalab.run(exp, store=store, executor=executor)
    no_leftover_jobs.extend(first.job_ids)
    assert first.job_ids
    second = metalab.run(exp, store=store, executor=executor)
    no_leftover_jobs.extend(second.job_ids)
    said = capsys.readouterr().err
    assert "8 runs already queued by submission" in said and "submitting 0" in said
    # The second handle follows the first submission: no job of its own.
    assert set(second.job_ids) == set(first.job_ids)
    results = second.result(timeout=240)
    assert len(results.successful) == 8
    assert len(first.result(timeout=240).successful) == 8
    executed = _executions(tmp_path)
    assert len(executed) == 8 and set(executed.values()) == {1}, executed


def test_a_relaunch_submits_only_runs_the_live_submission_does_not_hold(
    tmp_path: Path, no_leftover_jobs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    executor = metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5"))
    first = metalab.run(_exp(tmp_path, 4), store=store, executor=executor)
    no_leftover_jobs.extend(first.job_ids)
    grown = metalab.run(_exp(tmp_path, 6), store=store, executor=executor)
    no_leftover_jobs.extend(grown.job_ids)
    said = capsys.readouterr().err
    assert "4 runs already queued by submission" in said and "submitting 2" in said
    results = grown.result(timeout=240)
    assert len(results.successful) == 6  # its own 2 and the 4 of the first submission
    executed = _executions(tmp_path)
    assert len(executed) == 6 and set(executed.values()) == {1}, executed
