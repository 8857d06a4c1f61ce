"""Everyday SLURM ergonomics on the real cluster: reconnect after any resubmission, job ids
and names, running vs pending after reconnect, metrics in the progress display, Ctrl-C.

Tiny on purpose (the local cluster starts ~4 array tasks a second): a handful of runs.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.executors.slurm_script import job_name
from metalab.plan import RunPlan
from metalab.runner import launch_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import worker_env

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def op(context: Any, params: Any, seeds: Any, capture: Any, runtime: Any) -> None:
    """Fail x == 1 while the ``fail`` file exists; sleep ``context['sleep']``; metric y."""
    root = Path(context["dir"])
    if params["x"] == 1 and (root / "fail").exists():
        raise ValueError("x=1 fails while the flag file exists")
    time.sleep(context.get("sleep", 0.0))
    capture.metric("y", params["x"] * 2.0)


def _exp(tmp: Path, n: int = 4, version: str = "1", **ctx: Any) -> metalab.Experiment:
    return metalab.Experiment(
        "ergo",
        version,
        {"dir": str(tmp), **ctx},
        op,
        metalab.grid(x=list(range(n))),
        metalab.seeds(base=3),
    )


def _executor(**options: Any) -> metalab.SlurmExecutor:
    return metalab.SlurmExecutor(metalab.SlurmConfig(time="5", **options))


def _queued(job_ids: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(array job id, job name, state) of each queued array task of ``job_ids``."""
    out = subprocess.run(
        ["squeue", "--me", "-h", "-r", "-o", "%F|%j|%T"], capture_output=True, text=True
    ).stdout
    rows = [tuple(line.split("|")) for line in out.splitlines() if line.count("|") == 2]
    return [(j, n, s) for j, n, s in rows if j in job_ids]


def test_reconnect_works_after_every_kind_of_resubmission(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    (tmp_path / "fail").touch()
    exp = _exp(tmp_path)
    store = str(tmp_path / "store")
    first = metalab.run(exp, store=store, executor=_executor(runs_per_task=2))
    no_leftover_jobs.extend(first.job_ids)
    assert len(first.job_ids) == 1 and all(j.isdigit() for j in first.job_ids)
    assert metalab.reconnect(store).job_ids == first.job_ids  # the whole plan
    assert len(first.result(timeout=120).failed) == 1

    # Only the failed run is resubmitted (a task list blob names it).
    (tmp_path / "fail").unlink()
    second = metalab.run(exp, store=store, executor=_executor(runs_per_task=2))
    no_leftover_jobs.extend(second.job_ids)
    assert len(second.job_ids) == 1 and second.job_ids != first.job_ids
    again = metalab.reconnect(store)
    assert again.job_ids == second.job_ids
    assert again.result(timeout=120).successful and again.status.completed == 4

    # Nothing to do: nothing submitted, and reconnect still answers (it raised StoreError
    # "lacks blob slurm-...-tasks" before).
    third = metalab.run(exp, store=store, executor=_executor(runs_per_task=2))
    assert third.job_ids == ()
    for experiment_id in (None, exp.experiment_id):
        handle = metalab.reconnect(store, experiment_id=experiment_id)
        assert handle.job_ids == ()
        assert handle.status.completed == 4 and handle.status.is_complete
        assert len(handle.result(timeout=10).successful) == 4

    # A pointer written by an older metalab for such an empty resubmission named a task
    # list that was never written: reconnect reads it too.
    blobs = Path(store) / "blobs"
    pointer = json.loads((blobs / launch_key()).read_bytes())
    pointer["tasks_key"] = f"slurm-{pointer['submission']}-tasks"
    assert not (blobs / pointer["tasks_key"]).exists()
    metalab.store.FileStore(store).put_blob(launch_key(), json.dumps(pointer).encode())
    assert metalab.reconnect(store).status.completed == 4


def test_progress_shows_latest_metrics_of_slurm_runs(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    stream = io.StringIO()
    display = metalab.Progress(
        display_metrics=["y:.1f"], stream=stream, use_rich=False, interval=0, notebook=False
    )
    handle = metalab.run(
        _exp(tmp_path, sleep=0.5),
        store=str(tmp_path / "store"),
        executor=_executor(runs_per_task=2),
        progress=display,
    )
    no_leftover_jobs.extend(handle.job_ids)
    handle.result(timeout=120)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("metalab: 4/4"), lines
    shown = [line.split("y=")[1].split()[0] for line in lines if "y=" in line]
    assert shown and set(shown) <= {"0.0", "2.0", "4.0", "6.0"}, lines
    assert display.snapshot.latest["y"] in (0.0, 2.0, 4.0, 6.0)


def test_job_names_tell_experiments_of_one_name_apart(tmp_path: Path) -> None:
    one, other = _exp(tmp_path, version="1"), _exp(tmp_path, version="2")
    names = {job_name(e.name, RunPlan(e).run_ids) for e in (one, other, _exp(tmp_path, n=5))}
    assert len(names) == 3
    assert job_name(one.name, RunPlan(one).run_ids) == job_name("ergo", RunPlan(one).run_ids)
    odd = job_name("my exp, ünï/" + "x" * 80, ["ab" * 16])
    assert odd.isascii() and " " not in odd and "," not in odd and len(odd) <= 55
    assert odd.startswith("metalab-my_exp_") and len(odd.rsplit("-", 1)[1]) == 6


CTRL_C_SCRIPT = """
import sys, metalab
sys.path.insert(0, {tests!r})
from test_slurm_ergonomics import _exp, _executor
from pathlib import Path
handle = metalab.run(_exp(Path({tmp!r}), sleep=60), store={store!r},
                     executor=_executor(runs_per_task=1))
print(" ".join(handle.job_ids), flush=True)
handle.result()
"""


def test_ctrl_c_leaves_jobs_running_and_says_how_to_reconnect_or_cancel(
    tmp_path: Path, no_leftover_jobs: list[str]
) -> None:
    store = str(tmp_path / "store")
    script = CTRL_C_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), store=store)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
        # SIGINT ignored by a backgrounded suite would stay ignored in the child.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    jobs = tuple(proc.stdout.readline().split())
    no_leftover_jobs.extend(jobs)
    assert len(jobs) == 1, proc.communicate(timeout=30)
    deadline = time.monotonic() + 60
    while not any(state == "RUNNING" for _j, _n, state in _queued(jobs)):
        assert time.monotonic() < deadline, "no array task started"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGINT, 130), err
    lines = err.strip().splitlines()
    told = [line for line in lines if line.startswith("metalab: interrupted")]
    assert len(told) == 1, err
    assert f"SLURM job(s) {jobs[0]} of ergo:1 keep running" in told[0]
    assert lines[-1] == "KeyboardInterrupt" and len(lines) <= 8, err

    # The jobs do keep running, under a name that identifies the experiment.
    queued = _queued(jobs)
    expected = job_name("ergo", RunPlan(_exp(tmp_path, sleep=60)).run_ids)
    assert queued and {name for _j, name, _s in queued} == {expected}

    # After reconnect, running vs pending come from squeue (4 runs, 1 per array task).
    handle = metalab.reconnect(store)
    status = handle.status
    running = sum(1 for _j, _n, state in _queued(jobs) if state != "PENDING")
    assert status.running >= 1 and abs(status.running - running) <= 1, (status, queued)
    assert status.running + status.pending == 4 - status.completed - status.failed

    # The printed calls are exact: evaluating the cancel call empties the queue.
    watch = told[0].split("Watch: ")[1].split("  Cancel: ")[0]
    cancel = told[0].split("Cancel: ")[1]
    assert watch.startswith("metalab.reconnect(") and watch.endswith(".result()")
    eval(cancel, {"metalab": metalab})  # the very line metalab printed
    deadline = time.monotonic() + 60
    while _queued(jobs):
        assert time.monotonic() < deadline, "cancel left jobs queued"
        time.sleep(0.5)
    final = metalab.reconnect(store).result(timeout=60)
    assert len(final) <= 4 and metalab.reconnect(store).status.running == 0
