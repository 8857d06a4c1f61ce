"""Run claims in a SLURM array task (``metalab.worker``), without a cluster.

The worker is run as the array task runs it (a fresh ``python -m metalab.worker``
process); its block's runs are claimed before they execute, so a run another launch holds
is waited for (and not executed again once it landed), and a requeued attempt of the same
task takes over what it held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import metalab
from metalab.execution import base_record
from metalab.executors.base import Job
from metalab.plan import RunPlan
from metalab.records import RunState
from metalab.store.claims import new_owner
from metalab.store.file import FileStore
from submit_only import SubmitOnly

OPS = textwrap.dedent(
    """
    import os
    import metalab

    @metalab.operation
    def counted(params, runtime, capture):
        fd = os.open(os.environ["COUNT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{runtime.run_id}\\n".encode())
        finally:
            os.close(fd)
        capture.metric("x", params["x"])
    """
)


def _submitted(tmp: Path) -> tuple[FileStore, metalab.Experiment]:
    ops = tmp / "ops"
    ops.mkdir()
    (ops / "claim_ops.py").write_text(OPS)
    sys.path.insert(0, str(ops))
    try:
        import claim_ops  # type: ignore[import-not-found]

        exp = metalab.Experiment(
            name="slotted",
            version="1",
            context={},
            operation=claim_ops.counted,
            params=metalab.grid(x=[0, 1, 2]),
            seeds=metalab.seeds(base=1),
        )
        store = FileStore(tmp / "store")
        metalab.run(exp, store=store, executor=SubmitOnly(), progress=False)
    finally:
        sys.path.remove(str(ops))
        sys.modules.pop("claim_ops", None)
    return store, exp


def _array_task(
    tmp: Path, store: FileStore, exp: metalab.Experiment, job: str
) -> subprocess.Popen[str]:
    env = dict(os.environ, COUNT_LOG=str(tmp / "executions.log"), SLURM_JOB_ID=job)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp / "ops"), env.get("PYTHONPATH", "")])
    argv = ["--store", str(store.root), "--experiment", exp.experiment_id]
    argv += ["--array-task", "0", "--runs-per-task", "3"]
    return subprocess.Popen(
        [sys.executable, "-m", "metalab.worker", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _executed(tmp: Path) -> list[str]:
    log = tmp / "executions.log"
    return log.read_text().split() if log.exists() else []


def test_an_array_task_waits_for_a_run_a_live_launch_holds_and_does_not_redo_it(
    tmp_path: Path,
) -> None:
    store, exp = _submitted(tmp_path)
    plan = RunPlan(exp)
    run_ids = plan.run_ids
    live = new_owner()  # this test process: alive while the task runs
    assert store.claim(run_ids[1:2], live, 60.0) == run_ids[1:2]
    task = _array_task(tmp_path, store, exp, "4242")
    deadline = time.monotonic() + 60
    while len(_executed(tmp_path)) < 2:  # its two free runs
        assert task.poll() is None, task.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    assert task.poll() is None  # still waiting for the run this process holds
    # The holder finishes the run: record, marker, release.
    store.put_record(base_record(plan, plan.task(1), RunState.SUCCESS))
    store.mark(run_ids[1], RunState.SUCCESS)
    store.release(run_ids[1:2], live)
    _, err = task.communicate(timeout=60)
    assert task.returncode == 0, err
    assert sorted(_executed(tmp_path)) == sorted([run_ids[0], run_ids[2]])
    assert store.claim_holders(run_ids) == {}


def test_a_requeued_attempt_takes_over_what_its_slot_held(tmp_path: Path) -> None:
    store, exp = _submitted(tmp_path)
    run_ids = RunPlan(exp).run_ids
    # The killed first attempt of array task job 4243 (another node: not known dead here,
    # its lease still running) held the first run.
    earlier = new_owner(slot="4243")
    earlier = "othernode.1." + earlier.split(".", 2)[2]
    assert store.claim(run_ids[:1], earlier, 600.0) == run_ids[:1]
    task = _array_task(tmp_path, store, exp, "4243")
    _, err = task.communicate(timeout=60)
    assert task.returncode == 0, err
    assert sorted(_executed(tmp_path)) == sorted(run_ids)


def test_an_array_task_claims_without_computing_the_whole_plan(tmp_path: Path) -> None:
    """The claims of a block cost O(block): never every run ID of a 300,000-run sweep."""
    from metalab.executors.claimed import ClaimedTasks

    exp = metalab.Experiment(
        name="big",
        version="1",
        context={},
        operation=metalab.operation(lambda capture: None),
        params=metalab.grid(x=list(range(300_000))),
        seeds=metalab.seeds(base=1),
    )
    plan = RunPlan(exp)
    claims = ClaimedTasks(Job(plan, FileStore(tmp_path / "store"), [5, 6]), lambda t, s: None)
    try:
        assert [claims.take(), claims.take(), claims.take()] == [5, 6, None]
    finally:
        claims.close()
    assert "run_ids" not in plan.__dict__  # computing them costs an array task ~0.3 s
