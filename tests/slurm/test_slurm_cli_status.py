"""``metalab status`` and ``metalab cancel`` on a live SLURM launch (one array task)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.cli import main

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def stall_op(context: Any, params: Any, capture: Any) -> None:
    """Run 0 finishes at once; run 1 stalls while the ``stall`` file exists."""
    if params["x"] == 1 and (Path(context["dir"]) / "stall").exists():
        time.sleep(60)
    capture.metric("x", params["x"])


def _status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["status", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_status_shows_the_slurm_launch_and_cancel_scancels_it(
    tmp_path: Path, no_leftover_jobs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stall").touch()
    exp = metalab.Experiment(
        name="clislurm",
        version="1",
        context={"dir": str(tmp_path)},
        operation=stall_op,
        params=metalab.grid(x=[0, 1]),
        seeds=metalab.seeds(base=1),
    )
    store = str(tmp_path / "store")
    executor = metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=2, time="5"))
    metalab.run(exp, store=store, executor=executor)

    code, doc = _status(capsys, store, "clislurm")
    no_leftover_jobs.extend(doc["slurm_job_ids"])
    assert code == 0 and doc["executor"] == "slurm" and len(doc["slurm_job_ids"]) == 1
    deadline = time.monotonic() + 90
    while doc["status"]["completed"] < 1 or doc["status"]["running"] < 1:
        assert time.monotonic() < deadline, f"run 0 never finished while run 1 runs: {doc}"
        time.sleep(0.5)
        code, doc = _status(capsys, store, "clislurm:1")
    assert doc["complete"] is False and doc["status"]["total"] == 2

    capsys.readouterr()
    assert main(["cancel", store, "clislurm", "--json"]) == 0
    cancel = json.loads(capsys.readouterr().out)
    assert cancel["cancelled"] is True and cancel["unfinished"] == 1
    assert f"scancel-ed SLURM job(s) {doc['slurm_job_ids'][0]}" in cancel["message"]

    code, doc = _status(capsys, store, "clislurm", "--watch", "0.5")
    status = doc["status"]
    assert doc["complete"] is True and status["completed"] == 1 and status["running"] == 0
    assert status["failed"] + status["cancelled"] == 1
    assert code == (1 if status["failed"] else 0)
