"""kill -9 of the driver mid-experiment, then resume: exactly N successes, nothing corrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import metalab

DRIVER = textwrap.dedent(
    """
    import sys, time
    import metalab

    @metalab.operation
    def slow(params, seeds, capture):
        capture.log(f"start {params['i']}")
        capture.artifact("payload", {"i": params["i"], "r": seeds.rng().random()})
        time.sleep(0.02)
        capture.metric("i", params["i"])

    exp = metalab.Experiment(
        name="killme", version="1", context={}, operation=slow,
        params=metalab.grid(i=list(range(50))), seeds=metalab.seeds(base=3, replicates=2),
    )
    executor = None
    if sys.argv[2] == "process":
        executor = metalab.ProcessExecutor(max_workers=2)
    results = metalab.run(exp, store=sys.argv[1], executor=executor).result()
    print("DONE", len(results.successful))
    """
)


def _done_count(store: Path) -> int:
    done = store / "done"
    return sum(1 for _ in done.glob("*/*.done")) if done.is_dir() else 0


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_kill_driver_then_resume_completes_exactly(tmp_path: Path, executor: str) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), executor], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while _done_count(store) < 25:
            assert proc.poll() is None, "driver finished before it could be killed"
            assert time.monotonic() < deadline, "driver made no progress"
            time.sleep(0.01)
    finally:
        # The driver and any worker processes it started; also on a failed assertion,
        # so no driver outlives the test.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = _done_count(store)
    assert 25 <= killed_at < 100

    # Reconnecting sees the dead driver: result() returns what finished, without waiting.
    handle = metalab.reconnect(store)
    partial = handle.result(timeout=10)
    status = handle.status
    assert status.completed == killed_at and status.running == 0
    assert status.pending == 100 - killed_at - status.failed
    assert len(partial.successful) == killed_at

    out = subprocess.run(
        [sys.executable, str(script), str(store), "thread"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "DONE 100" in out
    assert _done_count(store) == 100
    records = [json.loads(p.read_bytes()) for p in store.glob("runs/*/*.json")]
    assert len(records) == 100 and {r["status"] for r in records} == {"success"}
    assert sorted(r["task_index"] for r in records) == list(range(100))
    visible_junk = [
        p
        for p in store.rglob("*")
        if p.is_file() and p.name.endswith(".tmp") and not p.name.startswith(".")
    ]
    assert visible_junk == []
    results = metalab.load_results(store)
    assert len(results) == 100 and not results.problems
    assert all(r.artifact("payload")["i"] == r.params["i"] for r in results)
