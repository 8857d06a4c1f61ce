"""The Launch/Executor interface answers what the runner asks, with no attribute probing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.executors.process import ProcessExecutor
from metalab.executors.thread import ThreadExecutor
from metalab.keys import launch_key
from metalab.store.file import FileStore


@metalab.operation
def double(params: dict[str, Any], capture: Any) -> None:
    capture.metric("y", 2 * params["x"])


def _exp() -> metalab.Experiment:
    return metalab.Experiment(
        name="api",
        version="1",
        context={},
        operation=double,
        params=metalab.grid(x=[1, 2, 3]),
        seeds=metalab.seeds(0),
    )


def test_a_local_dry_run_says_what_it_would_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s"
    metalab.run(_exp(), store=store).result(timeout=60)
    handle = metalab.run(_exp(), store=store, executor=ThreadExecutor(2), dry_run=True)
    out = capsys.readouterr().out
    assert out.startswith("dry run: 0 of 3 runs to execute (3 already done) with ThreadExecutor")
    assert FileStore(store).locator in out
    assert handle.status.completed == 3


@pytest.mark.parametrize("executor", [ThreadExecutor(1), ProcessExecutor(1)])
def test_local_launches_have_no_jobs_and_a_bare_pointer(tmp_path: Path, executor: Any) -> None:
    handle = metalab.run(_exp(), store=tmp_path / "s", executor=executor)
    handle.result(timeout=60)
    assert handle.job_ids == ()
    blob = FileStore(tmp_path / "s").get_blob(launch_key("api:1"))
    assert blob is not None
    pointer = json.loads(blob)
    assert set(pointer) == {
        "experiment_id",
        "executor",
        "launched_at",
        "driver_host",
        "driver_pid",
    }
