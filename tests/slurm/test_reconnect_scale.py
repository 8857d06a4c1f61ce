"""Reconnecting to a finished SLURM sweep reads the store once, not once per part.

At 300,000 runs a scan of every run's markers costs ~0.4 s and a TaskIdentity per run
~45 us: ``metalab.reconnect`` + ``.status`` scanned three times (its own done count, the
launch resolving every task that left the queue, the status) before a launch recorded
that it had accounted for every task (blob ``slurm-<submission>-resolved``). These tests
count the scans and identities instead of timing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab import _core
from metalab.executors.slurm import SlurmLaunch
from metalab.keys import slurm_resolved_key
from metalab.plan import RunPlan
from metalab.records import StoredState
from metalab.store.file import FileStore

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

N_RUNS = 24
RUNS_PER_TASK = 6


def square(params: Any, seeds: Any, capture: Any) -> None:
    """A trivial run: its metric is all the test needs."""
    capture.metric("y", params["x"] ** 2)


def _exp(name: str) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=square,
        params=metalab.grid(x=list(range(N_RUNS))),
        seeds=metalab.seeds(base=3),
    )


def _config() -> metalab.SlurmConfig:
    return metalab.SlurmConfig(runs_per_task=RUNS_PER_TASK, time="5")


class Calls:
    """Calls of ``_core.scan_states`` (run IDs asked) and of ``RunPlan.task``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scans: list[int] = []
        self.tasks = 0
        scan: Callable[..., Any] = _core.scan_states
        task: Callable[..., Any] = RunPlan.task

        def counted_scan(layout: Any, run_ids: list[str], labels: Any) -> Any:
            self.scans.append(len(run_ids))
            return scan(layout, run_ids, labels)

        def counted_task(plan: RunPlan, index: int) -> Any:
            self.tasks += 1
            return task(plan, index)

        monkeypatch.setattr(_core, "scan_states", counted_scan)
        monkeypatch.setattr(RunPlan, "task", counted_task)


def _finished_sweep(tmp_path: Path, name: str, jobs: list[str]) -> Path:
    store = tmp_path / "store"
    handle = metalab.run(_exp(name), store=str(store), executor=metalab.SlurmExecutor(_config()))
    jobs.extend(handle.job_ids)
    results = handle.result(timeout=180)
    assert len(results) == N_RUNS and all(r.status.value == "success" for r in results)
    return store


def test_reconnect_status_of_a_finished_sweep_scans_once_and_builds_no_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    store = _finished_sweep(tmp_path, "scale-once", no_leftover_jobs)
    calls = Calls(monkeypatch)
    handle = metalab.reconnect(str(store))
    status = handle.status
    assert (status.completed, status.running, status.pending, status.failed) == (N_RUNS, 0, 0, 0)
    assert handle.is_complete
    # One scan, the status's own; the launch knows it accounted for every task already.
    assert calls.scans == [N_RUNS, N_RUNS]  # status, then is_complete's status
    assert calls.tasks == 0


def test_a_garbled_resolved_blob_makes_the_launch_look_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    store = _finished_sweep(tmp_path, "scale-garbled", no_leftover_jobs)
    target = FileStore(store)
    handle = metalab.reconnect(str(store))
    assert isinstance(handle._launch, SlurmLaunch)
    target.put_blob(slurm_resolved_key(handle._launch.submission), b"not a count")
    calls = Calls(monkeypatch)
    status = metalab.reconnect(str(store)).status
    assert status.completed == N_RUNS and status.running == 0 and status.failed == 0
    # The launch resolves every task again (one scan of all runs), then the status.
    assert calls.scans == [N_RUNS, N_RUNS]
    assert calls.tasks == 0
    # ...and records that it did, for the next reconnect.
    assert target.get_blob(slurm_resolved_key(handle._launch.submission)) == b"0"


def test_a_cancelled_sweep_reconnected_counts_its_cancelled_runs(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    store = tmp_path / "store"
    exp = metalab.Experiment(
        name="scale-cancelled",
        version="1",
        context={},
        operation=_sleepy,
        params=metalab.grid(x=list(range(4))),
        seeds=metalab.seeds(base=3),
    )
    config = metalab.SlurmConfig(runs_per_task=2, time="5")
    handle = metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    handle.cancel()
    handle.result(timeout=120)
    before = handle.status
    assert before.completed == 0 and before.cancelled + before.failed == 4
    for _ in range(2):  # the first reconnect may resolve, the second reads the blob
        again = metalab.reconnect(str(store)).status
        assert (again.cancelled, again.failed, again.completed) == (
            before.cancelled,
            before.failed,
            0,
        )


def _sleepy(params: Any, seeds: Any, capture: Any) -> None:
    """A run long enough to be cancelled before it ends."""
    time.sleep(20)


def gated(params: Any, seeds: Any, capture: Any) -> None:
    """Runs x >= 3 wait (at most 90 s) until the file named in ``params["gate"]`` exists."""
    deadline = time.monotonic() + 90
    while params["x"] >= 3 and not Path(params["gate"]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    capture.metric("x", params["x"])


def test_a_poll_asks_only_about_runs_of_a_running_task_not_yet_seen_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    gate = tmp_path / "gate"
    exp = metalab.Experiment(
        name="scale-poll",
        version="1",
        context={},
        operation=gated,
        params=metalab.grid(x=list(range(6)), gate=[str(gate)]),
        seeds=metalab.seeds(base=3),
    )
    store = tmp_path / "store"
    config = metalab.SlurmConfig(runs_per_task=6, time="5")
    handle = metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    try:
        target = FileStore(store)
        deadline = time.monotonic() + 120
        while target.states(handle.run_ids).count(StoredState.DONE) < 3:
            assert time.monotonic() < deadline, "the first three runs did not finish"
            time.sleep(0.2)
        calls = Calls(monkeypatch)
        launch.poll(force=True)
        launch.poll(force=True)
        # The first poll asks about the task's six runs, the second only about the three
        # not seen done; both count the three unfinished ones as running.
        assert calls.scans == [6, 3]
        assert launch.counts().running == 3
    finally:
        gate.touch()
    results = handle.result(timeout=120)
    assert [r.status.value for r in results] == ["success"] * 6
