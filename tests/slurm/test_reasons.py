"""Why a run did not succeed: the reason kind in records, status, results and progress.

The parsers are fed text this machine's site-profile cluster printed; the cluster tests
end real array tasks by the OOM killer (cgroup memory limit), an exception, ``scancel``
and the walltime, and read the reason back through the public API.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from site_cluster import use_site_cluster

import metalab
from metalab.executors import slurm_reasons
from metalab.executors.slurm_config import SlurmConfig
from metalab.executors.slurm_reasons import TaskEnd, parse_sacct, reason_from_log
from metalab.executors.slurm_script import render_script
from metalab.executors.slurm_signals import parse_duration
from metalab.handle import RunHandle
from metalab.progress import Progress, ProgressSnapshot
from metalab.records import FailureReason, RunState
from metalab.runner import run
from metalab.store.file import FileStore

# Printed by `sacct -X -n -P --format=JobID,State,ExitCode -j 6` on the site profile for an
# array of three tasks (a 600 MB allocation under --mem=200M, `exit 3`, `true`), plus a
# pending range, a step and a plain job as sacct prints them.
SACCT_SITE = """\
6_0|OUT_OF_MEMORY|0:125
6_1|FAILED|3:0
6_2|COMPLETED|0:0
6_[3-9]|PENDING|0:0
6_2.batch|COMPLETED|0:0
7|CANCELLED by 0|0:15
8_4|CANCELLED by 0|0:15
8_5|TIMEOUT|0:0
8_6|NODE_FAIL|1:0
8_7|PREEMPTED|0:15
"""
OOM_LINE = (
    "slurmstepd-vm: error: Detected 1 oom-kill event(s) in StepId=7.batch. Some of your "
    "processes may have been killed by the cgroup out-of-memory handler."
)


def test_sacct_output_maps_array_tasks_to_reason_kinds() -> None:
    ends = parse_sacct(SACCT_SITE)
    assert set(ends) == {("6", 0), ("6", 1), ("6", 2), ("8", 4), ("8", 5), ("8", 6), ("8", 7)}
    assert ends[("6", 0)] == TaskEnd("OUT_OF_MEMORY", "0:125")
    assert ends[("6", 0)].reason is FailureReason.OUT_OF_MEMORY
    assert ends[("6", 1)].reason is FailureReason.CRASHED  # the worker itself died
    assert ends[("6", 2)].reason is None and ends[("6", 2)].finished
    assert ends[("8", 4)].state == "CANCELLED" and ends[("8", 4)].reason is FailureReason.CANCELLED
    assert ends[("8", 5)].reason is FailureReason.TIMEOUT
    assert ends[("8", 6)].reason is FailureReason.NODE_FAIL
    assert ends[("8", 7)].reason is FailureReason.PREEMPTED
    assert not TaskEnd("RUNNING", "0:0").finished and TaskEnd("RUNNING", "0:0").reason is None


def test_slurmstepd_last_words_name_the_reason() -> None:
    assert reason_from_log(OOM_LINE) is FailureReason.OUT_OF_MEMORY
    stamp = "2026-12-01T23:00:00"
    assert (
        reason_from_log(
            f"slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT {stamp} DUE TO TIME LIMIT ***"
        )
        is FailureReason.TIMEOUT
    )
    assert (
        reason_from_log(f"slurmstepd: error: *** JOB 12 ON vm CANCELLED AT {stamp} ***")
        is FailureReason.CANCELLED
    )
    assert reason_from_log("Traceback (most recent call last):") is None
    assert reason_from_log(None) is None


def test_slurm_durations_parse_as_scontrol_prints_them() -> None:
    assert parse_duration("00:01:00") == 60
    assert parse_duration("1-02:00:00") == 93600
    assert parse_duration("05:30") == 330
    assert parse_duration("UNLIMITED") is None and parse_duration("") is None


def test_batch_script_asks_for_the_walltime_warning_and_requeue() -> None:
    def script(**kw: Any) -> str:
        return render_script(
            SlurmConfig(**kw),
            python="/p",
            store_locator="file:///s",
            experiment_id="e:1",
            offset=0,
            tasks_key=None,
            job_name="metalab-e",
        )

    text = script(time="1:00:00")
    assert "#SBATCH --signal=B:USR1@60\n" in text and "#SBATCH --requeue\n" in text
    assert "--signal-lead 60" in text and text.rstrip().splitlines()[-1].startswith("exec ")
    # A one-minute walltime is warned half-way, never at once.
    assert "#SBATCH --signal=B:USR1@30\n" in script(time="1")
    assert "--requeue" not in script(requeue=False)


def _failing_op(context: Any, params: Any, capture: Any) -> None:
    if params["x"] == 1:
        raise ValueError("bad x 1")
    if params["x"] == 2:
        raise MemoryError("cannot allocate")
    capture.metric("y", params["x"])


def test_local_runs_record_exception_and_memory_reasons(tmp_path: Path) -> None:
    exp = metalab.Experiment(
        name="local_reasons",
        version="1",
        context={},
        operation=_failing_op,
        params=metalab.grid(x=[0, 1, 2]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    store = str(tmp_path / "store")
    handle = run(exp, store=store)
    results = handle.result()
    by_x = {r.params["x"]: r.record for r in results}
    assert by_x[0].reason is None and by_x[0].status is RunState.SUCCESS
    assert by_x[1].reason is FailureReason.EXCEPTION
    assert by_x[2].reason is FailureReason.OUT_OF_MEMORY
    assert handle.status.reasons == {"exception": 1, "out_of_memory": 1}
    assert sorted(r.record.reason for r in results.failed) == ["exception", "out_of_memory"]
    assert sorted(r.reason for r in results.failed) == ["exception", "out_of_memory"]
    frame = results.to_dataframe()
    reason_of_x = dict(zip(frame["param_x"], frame["reason"], strict=True))
    assert pd_isna(reason_of_x[0]) and reason_of_x[1] == "exception"
    assert reason_of_x[2] == "out_of_memory"
    # Stored as a top-level key that the Rust column loader accepts as well.
    doc = json.loads(
        next((tmp_path / "store" / "runs").rglob(f"{by_x[1].run_id}.json")).read_text()
    )
    assert doc["reason"] == "exception"
    assert len(metalab.load_results(store)) == 3


def test_records_written_before_reasons_load_without_one(tmp_path: Path) -> None:
    exp = metalab.Experiment(
        name="old_records",
        version="1",
        context={},
        operation=_failing_op,
        params=metalab.grid(x=[1]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    run(exp, store=str(tmp_path / "store")).result()
    path = next((tmp_path / "store" / "runs").rglob("*.json"))
    doc = json.loads(path.read_text())
    del doc["reason"]
    path.write_text(json.dumps(doc))
    store = FileStore(tmp_path / "store")
    record = store.get_record(doc["run_id"])
    assert record is not None and record.reason is None and record.status is RunState.FAILED
    results = metalab.load_results(str(tmp_path / "store"))
    assert len(results.failed) == 1 and not results.problems


def test_progress_line_names_the_reasons() -> None:
    progress = Progress(use_rich=False, stream=io.StringIO(), notebook=False)
    progress.update(
        ProgressSnapshot(total=4, completed=1, failed=3, reasons={"out_of_memory": 2, "timeout": 1})
    )
    assert "failed 3 (out_of_memory 2, timeout 1)" in progress.line()
    progress.close()


def pd_isna(value: Any) -> bool:
    """None or NaN, as pandas shows a missing value in an object column."""
    return value is None or value != value


# -- on the cluster -------------------------------------------------------------------------
def _cluster_op(context: Any, params: Any, capture: Any) -> None:
    x = params["x"]
    if x == 1:
        block = bytearray(600 * 1024 * 1024)  # three times --mem: the OOM killer ends it
        for at in range(0, len(block), 4096):
            block[at] = 1
    if x == 2:
        raise ValueError("bad x 2")
    if x == 3:
        (Path(context["dir"]) / "started-3").touch()
        time.sleep(120)
    capture.metric("y", x)


@pytest.mark.slurm
def test_site_cluster_reasons_oom_exception_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(argv, list) and argv and argv[0] == "sacct":
            calls.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(slurm_reasons.subprocess, "run", counting_run)
    exp = metalab.Experiment(
        name="site_reasons",
        version="1",
        context={"dir": str(tmp_path)},
        operation=_cluster_op,
        params=metalab.grid(x=[0, 1, 2, 3]),
        seeds=metalab.seeds(base=1, replicates=1),
    )
    store = str(tmp_path / "store")
    config = metalab.SlurmConfig(memory="200M", time="5")
    handle = run(exp, store=store, executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started-3").exists():
        assert time.monotonic() < deadline, "task of x=3 never started"
        time.sleep(0.2)
    time.sleep(1.0)  # the worker is inside the operation
    subprocess.run(["scancel", f"{handle.job_ids[0]}_3"], check=True)
    results = handle.result(timeout=120)
    reasons = {r.params["x"]: r.record.reason for r in results}
    assert reasons == {
        0: None,
        1: FailureReason.OUT_OF_MEMORY,
        2: FailureReason.EXCEPTION,
        3: FailureReason.CANCELLED,
    }
    oom = next(r.record for r in results if r.params["x"] == 1)
    assert oom.error is not None
    assert "OUT_OF_MEMORY" in oom.error.message or "oom-kill" in oom.error.message
    # The report printed by result() names what the infrastructure did; a plain
    # exception keeps its usual line.
    report = results.failure_report()
    assert "  out_of_memory: WorkerCrashedError (1 run): " in report
    assert "  cancelled: RunInterrupted (1 run): SLURM sent SIGTERM (scancel)" in report
    assert "  ValueError (1 run): bad x 2" in report
    status = handle.status
    assert status.reasons == {"out_of_memory": 1, "exception": 1, "cancelled": 1}
    assert isinstance(handle, RunHandle) and status.failed == 3
    # Accounting was asked once per poll that saw tasks leave unfinished, for all arrays.
    assert 1 <= len(calls) <= 3 and all("-j" in c for c in calls)


_SIGNALS = """
import os, signal, sys
from metalab.execution import RunInterrupted
from metalab.executors.slurm_signals import WorkerSignals
os.environ.pop("SLURM_JOB_ID", None)  # no controller to ask: the fallbacks decide
signals = WorkerSignals(30)
signals.install()
if sys.argv[1] == "warned":
    os.kill(os.getpid(), signal.SIGUSR1)  # the walltime warning interrupts nothing
    print("still running", signals.warned, flush=True)
try:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
except RunInterrupted as exc:
    print(exc.reason.value, exc, flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # a second signal while recording is ignored
print("recorded", flush=True)
"""


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("warned", ["still running True", "timeout", "recorded"]),
        ("term", ["cancelled", "recorded"]),
    ],
)
def test_worker_signals_become_interrupts_with_their_reason(case: str, expected: list[str]) -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SIGNALS, case], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(expected) and all(
        line.startswith(start) for line, start in zip(lines, expected, strict=True)
    ), lines
