"""Checkpoints on the real cluster: a long run killed mid-way resumes where it was.

The run takes 24 steps of 0.25 s and checkpoints after each. The test waits until it has
checkpointed a few steps, then ends its array task the way a site does (``scancel``:
SIGTERM, as at a walltime) or the way a crash does (SIGKILL of the worker process: no
record, no cleanup) and resubmits, or requeues it as preemption does (``scontrol
requeue``), after which SLURM starts the same task again with no resubmission. A side
file, written by the run after every checkpoint and at every start, shows where each
execution began: the second one must start right after the last step the first one
checkpointed, not at step 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_tools import release_requeued, requeue

import metalab
from metalab.capture.checkpoint import decode_checkpoint
from metalab.executors.slurm import SlurmLaunch
from metalab.keys import checkpoint_key
from metalab.store.file import FileStore

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

STEPS = 24


def long_run(context: Any, params: Any, capture: Any) -> None:
    """Counts to STEPS, a checkpoint after every step; logs each start and checkpoint."""
    log = Path(context["dir"]) / "events"
    execution = f"{os.environ.get('SLURM_JOB_ID', 'local')}:{os.getpid()}"
    state = capture.restore() or {"step": 0, "sum": 0}

    def note(event: str, step: int) -> None:
        with open(log, "a") as fh:
            fh.write(json.dumps({"event": event, "step": step, "execution": execution}) + "\n")

    note("start", state["step"])
    (Path(context["dir"]) / "pid").write_text(str(os.getpid()))
    for step in range(state["step"], STEPS):
        time.sleep(0.25)
        state = {"step": step + 1, "sum": state["sum"] + step}
        capture.checkpoint(state)
        note("checkpoint", step + 1)
    capture.metric("sum", state["sum"])


def _events(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _executor() -> metalab.SlurmExecutor:
    return metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=1, time="5"))


def _kill_mid_way_then_resume(tmp: Path, jobs: list[str], how: str) -> None:
    exp = metalab.Experiment(
        name=f"ckpt-{how}",
        version="1",
        context={"dir": str(tmp)},
        operation=long_run,
        params=metalab.grid(x=[0]),
        seeds=metalab.seeds(base=3, replicates=1),
    )
    store = str(tmp / "store")
    handle = metalab.run(exp, store=store, executor=_executor())
    launch = handle._launch
    assert isinstance(launch, SlurmLaunch)
    jobs.extend(launch.job_ids)
    deadline = time.monotonic() + 120
    while sum(e["event"] == "checkpoint" for e in _events(tmp)) < 4:
        assert time.monotonic() < deadline, f"the run never checkpointed: {_events(tmp)}"
        time.sleep(0.1)
    if how == "requeue":
        # What preemption with PreemptMode=REQUEUE does: SIGTERM, back to pending, the
        # same array task starts again by itself; nobody resubmits anything.
        task = f"{launch.job_ids[0]}_0"
        release_requeued(
            task,
            killed_at=requeue(task),
            started=lambda: len([e for e in _events(tmp) if e["event"] == "start"]) > 1,
        )
        # The store says when the second attempt is done (the interrupted attempt's
        # record stands until then).
        (run_id,) = handle.run_ids
        deadline = time.monotonic() + 180
        while (record := FileStore(store).get_record(run_id)) is None or (
            record.status.value != "success"
        ):
            assert time.monotonic() < deadline, f"the requeued task never finished: {record}"
            time.sleep(0.3)
        (done,) = metalab.load_results(store)
    else:
        if how == "scancel":
            subprocess.run(["scancel", launch.job_ids[0]], check=True)
        else:
            os.kill(int((tmp / "pid").read_text()), signal.SIGKILL)
        first = handle.result(timeout=120)
        (killed,) = first
        assert killed.status.value in ("cancelled", "failed"), killed.status
        again = metalab.run(exp, store=store, resume=True, executor=_executor())
        assert isinstance(again._launch, SlurmLaunch)
        jobs.extend(again._launch.job_ids)
        (done,) = again.result(timeout=120)
    assert done.status.value == "success", done.error
    assert done.metrics["sum"] == sum(range(STEPS))
    starts = [e for e in _events(tmp) if e["event"] == "start"]
    assert len(starts) == 2 and starts[0]["execution"] != starts[1]["execution"], starts
    first = starts[0]["execution"]
    saved = [
        e["step"] for e in _events(tmp) if e["event"] == "checkpoint" and e["execution"] == first
    ]
    assert 4 <= saved[-1] < STEPS, saved  # killed mid-way, after a few checkpoints
    # The re-execution began where the killed one had checkpointed last, not at step 0.
    assert [s["step"] for s in starts] == [0, saved[-1]], (starts, saved)
    # Checkpointed steps 1..STEPS each once: no step was computed twice to completion.
    steps = [e["step"] for e in _events(tmp) if e["event"] == "checkpoint"]
    assert steps == list(range(1, STEPS + 1)), steps
    # The success cleared the checkpoint.
    blob = FileStore(store).get_blob(checkpoint_key(done.run_id))
    assert blob is not None and decode_checkpoint(blob, done.run_id, "blob") == (False, None)


def test_scancel_mid_run_resumes_from_the_checkpoint(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    _kill_mid_way_then_resume(tmp_path, no_leftover_jobs, "scancel")


def test_killed_worker_resumes_from_the_checkpoint(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    _kill_mid_way_then_resume(tmp_path, no_leftover_jobs, "kill")


def test_requeued_task_resumes_from_the_checkpoint_by_itself(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    _kill_mid_way_then_resume(tmp_path, no_leftover_jobs, "requeue")
