"""Retries of what the infrastructure broke, with escalated resources, no driver needed.

The cluster tests submit from a child process that exits at once, then watch from a
fresh handle (``reconnect``): the retry job on the cluster does the resubmitting.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from site_cluster import use_site_cluster

from metalab.errors import SlurmConfigError
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_retry import escalate, format_time, scale_memory
from metalab.reconnect import reconnect
from metalab.records import FailureReason, RunState
from metalab.store.file import FileStore


def test_escalation_doubles_memory_after_oom_and_adds_half_the_time_after_timeout() -> None:
    config = SlurmConfig(memory="200M", time="1", retries=2)
    assert escalate(config, {FailureReason.OUT_OF_MEMORY}).memory == "400M"
    assert escalate(config, {FailureReason.OUT_OF_MEMORY}).time == "1"
    longer = escalate(config, {FailureReason.TIMEOUT})
    assert longer.time == "0:01:30" and longer.memory == "200M" and longer.retries == 1
    both = escalate(escalate(config, {FailureReason.TIMEOUT}), {FailureReason.TIMEOUT})
    assert both.time == "0:02:15" and both.retries == 0
    assert escalate(config, {FailureReason.NODE_FAIL}) == SlurmConfig(
        memory="200M", time="1", retries=1
    )
    assert scale_memory("16GB", 2) == "32G" and format_time(93600) == "1-02:00:00"


@pytest.mark.parametrize(
    ("field", "value"),
    [("retries", -1), ("retries", "2"), ("retry_exceptions", "yes"), ("requeue", 1)],
)
def test_retry_settings_are_validated(field: str, value: Any) -> None:
    with pytest.raises(SlurmConfigError, match=field):
        SlurmConfig(**{field: value})


_SUBMIT = """
import sys, time
from pathlib import Path
import metalab
from metalab.runner import run

def op(context, params, capture):
    root = Path(context["dir"])
    x = params["x"]
    with open(root / f"exec-{{x}}", "a") as fh:
        fh.write("start\\n")
    if x == 0:
        block = bytearray(320 * 1024 * 1024)  # more than 200M, less than 400M
        for at in range(0, len(block), 4096):
            block[at] = 1
    if x == 1:
        raise ValueError("a bug: not retried")
    time.sleep(context["sleep"].get(str(x), 0))
    capture.metric("y", x)

exp = metalab.Experiment(
    name={name!r}, version="1", context={{"dir": {dir!r}, "sleep": {sleep!r}}},
    operation=op, params=metalab.grid(x={xs!r}), seeds=metalab.seeds(base=1, replicates=1),
)
config = metalab.SlurmConfig(memory="200M", time={time!r}, retries=1, runs_per_task={k!r})
handle = run(exp, store={store!r}, executor=metalab.SlurmExecutor(config))
print(" ".join(handle.job_ids))
"""


def _submit_and_leave(tmp_path: Path, k: int = 1, **kw: Any) -> list[str]:
    script = textwrap.dedent(_SUBMIT.format(dir=str(tmp_path), k=k, **kw))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _requested_memory(job_id: str) -> str:
    """sacct's ``JobID|ReqMem`` of a finished array job's tasks.

    slurmdbd records a job's end a moment after squeue stops listing it; until then sacct
    shows the array's pending summary row (``1234|16?``), so ask again for a while.
    """
    deadline = time.monotonic() + 30
    while True:
        asked = subprocess.run(
            ["sacct", "-X", "-n", "-P", "--format=JobID,ReqMem", "-j", job_id],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if f"{job_id}_" in asked or time.monotonic() > deadline:
            return asked
        time.sleep(0.5)


def _executions(tmp_path: Path, x: int) -> int:
    path = tmp_path / f"exec-{x}"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slurm
def test_out_of_memory_run_succeeds_on_its_retry_exception_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    store = str(tmp_path / "store")
    first = _submit_and_leave(
        tmp_path, name="retry_oom", sleep={}, xs=[0, 1, 2], time="5", store=store
    )
    no_leftover_jobs.extend(first)
    assert len(first) == 2  # the array and its retry job; the submitting process is gone
    handle = reconnect(store)
    results = handle.result(timeout=240)
    no_leftover_jobs.extend(handle.job_ids)
    by_x = {r.params["x"]: r.record for r in results}
    assert by_x[0].status is RunState.SUCCESS and by_x[2].status is RunState.SUCCESS
    assert by_x[1].status is RunState.FAILED and by_x[1].reason is FailureReason.EXCEPTION
    assert [_executions(tmp_path, x) for x in (0, 1, 2)] == [2, 1, 1]
    # The resubmission asked for twice the memory, and the handle follows it.
    assert len(handle.job_ids) == 3
    asked = _requested_memory(handle.job_ids[2])
    assert "|400M" in asked, asked
    log = next((tmp_path / "store" / "slurm" / "logs").glob("*/retry.out")).read_text()
    assert "resubmitted 1 run(s)" in log and "(out_of_memory)" in log and "memory=400M" in log
    status = handle.status
    assert status.completed == 2 and status.failed == 1 and status.reasons == {"exception": 1}


@pytest.mark.slurm
@pytest.mark.slow
def test_run_past_a_one_minute_walltime_succeeds_on_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    store = str(tmp_path / "store")
    # One array task of two runs: x=2 sleeps past the walltime (SLURM enforces it on a
    # ~30 s tick, so 100 s is surely past 1:00), x=3 never gets to start. The retry's 1:30
    # is rounded up to whole minutes by SLURM: 2:00 holds the 100 s.
    jobs = _submit_and_leave(
        tmp_path, name="retry_time", sleep={"2": 100}, xs=[2, 3], time="1", store=store, k=2
    )
    no_leftover_jobs.extend(jobs)
    handle = reconnect(store)
    seen: dict[int, set[Any]] = {0: set(), 1: set()}
    deadline = time.monotonic() + 420
    while not handle.is_complete:
        assert time.monotonic() < deadline, f"not finished; reasons seen: {seen}"
        for at, run_id in enumerate(handle.run_ids):
            record = FileStore(tmp_path / "store").get_record(run_id)
            if record is not None:
                seen[at].add((record.status, record.reason))
        time.sleep(2)
    no_leftover_jobs.extend(handle.job_ids)
    # The first attempt was recorded as timed out (the worker, warned by SLURM, was
    # stopped at the walltime), and so was the run it never started; the retry with 1.5
    # times the walltime finished both.
    assert (RunState.FAILED, FailureReason.TIMEOUT) in seen[0]
    assert (RunState.FAILED, FailureReason.TIMEOUT) in seen[1]
    final = handle.result(timeout=30)
    assert [r.record.status for r in final] == [RunState.SUCCESS] * 2
    assert _executions(tmp_path, 2) == 2 and _executions(tmp_path, 3) == 1
    log = next((tmp_path / "store" / "slurm" / "logs").glob("*/retry.out")).read_text()
    assert "resubmitted 2 run(s)" in log and "(timeout)" in log and "time=0:01:30" in log


@pytest.mark.slurm
def test_cancel_stops_the_retry_job_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    store = str(tmp_path / "store")
    jobs = _submit_and_leave(
        tmp_path, name="retry_cancel", sleep={"2": 60}, xs=[2], time="5", store=store
    )
    no_leftover_jobs.extend(jobs)
    handle = reconnect(store)
    deadline = time.monotonic() + 240  # the shared cluster may be busy with other tests
    while _executions(tmp_path, 2) == 0:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    handle.cancel()
    results = handle.result(timeout=60)
    assert [r.record.reason for r in results] == [FailureReason.CANCELLED]
    queued = subprocess.run(
        ["squeue", "-h", "-j", ",".join(jobs), "-o", "%i"], capture_output=True, text=True
    ).stdout
    assert queued.strip() == ""  # the retry job went with the arrays: nothing resubmitted
    assert handle.job_ids == tuple(jobs) and _executions(tmp_path, 2) == 1


def pg_oom_op(context: Any, params: Any, capture: Any) -> None:
    """Need about 320 MB: more than 200M, less than the 400M of the retry."""
    with open(Path(context["dir"]) / "exec-0", "a") as fh:
        fh.write("start\n")
    block = bytearray(320 * 1024 * 1024)
    for at in range(0, len(block), 4096):
        block[at] = 1
    capture.metric("y", 1)


@pytest.mark.slurm
@pytest.mark.postgres
def test_retry_job_logs_in_to_postgres_with_the_submission_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    import metalab
    from metalab.runner import run
    from metalab.store.credentials import CREDENTIALS_DIR_ENV, passfile_path
    from pg_roles import password_role

    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(tmp_path / "private"))
    monkeypatch.chdir(tmp_path)  # SLURM's default logs of PostgreSQL-store tasks land here
    with password_role(tmp_path, monkeypatch) as role:
        exp = metalab.Experiment(
            name="retry_pg",
            version="1",
            context={"dir": str(tmp_path)},
            operation=pg_oom_op,
            params=metalab.grid(x=[0]),
            seeds=metalab.seeds(base=1, replicates=1),
        )
        config = metalab.SlurmConfig(memory="200M", time="5", retries=1)
        handle = run(exp, store=role.url, executor=metalab.SlurmExecutor(config))
        no_leftover_jobs.extend(handle.job_ids)
        submission = handle._launch.submission  # type: ignore[union-attr]
        results = handle.result(timeout=240)
        no_leftover_jobs.extend(handle.job_ids)
        assert [r.record.status for r in results] == [RunState.SUCCESS]
        assert _executions(tmp_path, 0) == 2 and len(handle.job_ids) == 3
        # The retry job used the first submission's password file, then removed it.
        assert not passfile_path(f"slurm-{submission}").exists()
        log = (tmp_path / f"slurm-{handle.job_ids[1]}_0.out").read_text()
        assert "(out_of_memory)" in log and "memory=400M" in log
        for secret in role.secrets:
            assert secret not in log
