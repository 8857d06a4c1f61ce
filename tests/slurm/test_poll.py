"""A watching driver is gentle with the controller: every ``squeue``/``sacct`` it runs is counted.

``squeue`` and ``sacct`` are put behind a PATH shim that appends one line (time, tool, parent
pid) to a file and ``exec``s the real binary, so the real cluster answers every call. Only
the calls of this process (the driver: parent pid = ours) are counted; the cluster's jobs
inherit the PATH and their own calls (the retry job's ``sacct``) are not the driver's.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from site_cluster import use_site_cluster

import metalab
from metalab.executors import slurm_poll
from metalab.records import RunState

pytestmark = [pytest.mark.slurm]


def _shim(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put logging ``squeue``/``sacct`` in front of the real ones; return the log file."""
    log = tmp / "calls.log"
    bin_dir = tmp / "shim"
    bin_dir.mkdir()
    for tool in ("squeue", "sacct"):
        real = shutil.which(tool)
        assert real is not None, f"{tool} not on PATH"
        script = bin_dir / tool
        # While the file ``fail-squeue`` holds a count above 0, squeue answers as an
        # overloaded controller does (and the count goes down by one).
        fail = tmp / f"fail-{tool}"
        script.write_text(
            f'#!/bin/sh\necho "$(date +%s.%N) {tool} $PPID" >> {log}\n'
            f"n=$(cat {fail} 2>/dev/null || echo 0)\n"
            f'if [ "$n" -gt 0 ]; then\n'
            f"  echo $((n - 1)) > {fail}\n"
            f"  echo '{tool}: error: slurm_load_jobs error: Socket timed out on send/recv "
            f"operation' >&2\n"
            f"  exit 1\n"
            f"fi\n"
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path, tool: str, since: float) -> list[float]:
    """Times of this process's calls of ``tool`` from ``since`` (``time.time()``), in order.

    Calls before are the submission's (limits discovery counts what is queued, once).
    """
    me = str(os.getpid())
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        stamp, name, parent = line.split()
        if name == tool and parent == me and float(stamp) >= since:
            found.append(float(stamp))
    return found


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def sleepy(context: Any, params: Any, capture: Any) -> None:
    """Crashes the first attempt of run 0 (a task dying under it); the others sleep."""
    mark = Path(context["dir"]) / f"attempt-{params['x']}"
    first = not mark.exists()
    with open(mark, "a") as fh:
        fh.write("x\n")
    if params["x"] == 0 and context["crash"] and first:
        os._exit(3)  # like a segfault in a native library: nothing recorded
    time.sleep(context["sleep"])
    capture.metric("x", params["x"])


def _exp(name: str, tmp: Path, n: int, sleep: float, crash: bool) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={"dir": str(tmp), "sleep": sleep, "crash": crash},
        operation=sleepy,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=1, replicates=1),
    )


def test_poll_interval_backs_off_while_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    log = _shim(tmp_path, monkeypatch)
    exp = _exp("poll_idle", tmp_path, 2, sleep=16.0, crash=False)
    config = metalab.SlurmConfig(time="10:00", memory="300M")
    handle = metalab.run(exp, store=str(tmp_path / "store"), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    submitted, started = time.time(), time.monotonic()
    results = handle.result(timeout=240)
    elapsed = time.monotonic() - started
    assert [r.status for r in results] == [RunState.SUCCESS] * 2
    squeues = _calls(log, "squeue", submitted)
    gaps = _gaps(squeues)
    # Never two calls in one poll, never faster than the first interval.
    assert min(gaps) >= slurm_poll.FIRST_S * 0.9, " ".join(f"{g:.2f}" for g in gaps)
    # 16 s in which nothing changed: 1, 1.5, 2.25, 3.4, 5.1 s... (a fixed 2 s poll has
    # no gap above ~2.1 s and would call about elapsed / 2 times).
    assert max(gaps) >= 3.3, gaps
    assert len(squeues) <= elapsed / 2, (len(squeues), elapsed)
    # No accounting call for tasks that ended well (sacct only explains crashes).
    assert _calls(log, "sacct", submitted) == []


def test_one_squeue_per_poll_with_a_retry_follower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    log = _shim(tmp_path, monkeypatch)
    exp = _exp("poll_retry", tmp_path, 2, sleep=6.0, crash=True)
    config = metalab.SlurmConfig(time="10:00", memory="300M", retries=1)
    handle = metalab.run(exp, store=str(tmp_path / "store"), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    submitted = time.time()
    results = handle.result(timeout=300)
    no_leftover_jobs.extend(handle.job_ids)
    assert [r.status for r in results] == [RunState.SUCCESS] * 2, [
        (r.record.error, r.record.reason, handle.job_ids) for r in results
    ]
    # The crashed run was resubmitted by the retry job, and the handle followed it.
    assert len(handle.job_ids) == 3  # the array, the retry job, the resubmission
    assert (tmp_path / "attempt-0").read_text().count("x") == 2
    squeues = _calls(log, "squeue", submitted)
    # The resubmission's launch reads the same answer as the first one: one call per
    # poll for the whole submission, never a call per launch, shard or task.
    assert min(_gaps(squeues)) >= slurm_poll.FIRST_S * 0.9, _gaps(squeues)
    sacct = _calls(log, "sacct", submitted)
    assert len(sacct) <= len(squeues)
    assert all(gap >= slurm_poll.FIRST_S * 0.9 for gap in _gaps(sacct)), _gaps(sacct)


def test_a_controller_that_times_out_is_asked_less_often_and_result_still_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_jobs: list[str]
) -> None:
    use_site_cluster(monkeypatch)
    log = _shim(tmp_path, monkeypatch)
    exp = _exp("poll_refused", tmp_path, 2, sleep=1.0, crash=False)
    config = metalab.SlurmConfig(time="10:00", memory="300M")
    handle = metalab.run(exp, store=str(tmp_path / "store"), executor=metalab.SlurmExecutor(config))
    no_leftover_jobs.extend(handle.job_ids)
    submitted = time.time()
    (tmp_path / "fail-squeue").write_text("3\n")  # the next three polls time out
    with pytest.warns(RuntimeWarning, match="Socket timed out") as said:
        results = handle.result(timeout=240)
    assert [r.status for r in results] == [RunState.SUCCESS] * 2
    assert len([w for w in said if "Socket timed out" in str(w.message)]) == 1  # said once
    gaps = _gaps(_calls(log, "squeue", submitted))
    # Each failure doubles the interval: 1 -> 2 -> 4 -> 8 s (a fixed 2 s poll: 2, 2, 2).
    assert gaps[0] >= 1.8 and gaps[1] >= 3.6 and gaps[2] >= 7.2, gaps
