"""Submissions fitted to a site-like cluster (``slurm-local-cluster.sh --profile site``).

The cluster enforces ``MaxArraySize=1001`` and per-QOS ``MaxSubmitJobsPerUser`` (``normal``
200, the default; ``bigsubmit`` 2000; ``smallsubmit`` 20 and ``tinysubmit`` 8, which keep
wave tests quick).
Tests pick a QOS through ``SBATCH_QOS``, as a site's user would; metalab's limits discovery
reads the same variable. Every test counts what the cluster really ran.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.errors import SlurmConfigError
from metalab.executors import slurm_limits
from metalab.executors.slurm_limits import SiteLimits

pytestmark = [pytest.mark.slurm]


def count_op(context: Any, params: Any, seeds: Any, capture: Any) -> None:
    """Note the execution in the context dir (one file per run), record a metric."""
    path = Path(context["dir"]) / f"exec-{params['i']}-{seeds.base}"
    with open(path, "a") as fh:
        fh.write("x\n")
    if params["i"] % 2 and not (Path(context["dir"]) / "ready").exists():
        raise RuntimeError("not ready yet")  # the first attempt of odd runs (auto test)
    capture.metric("i", params["i"])


def _exp(name: str, tmp: Path, n: int, replicates: int = 1) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={"dir": str(tmp)},
        operation=count_op,
        params=metalab.grid(i=list(range(n))),
        seeds=metalab.seeds(base=3, replicates=replicates),
    )


def _executions(tmp: Path) -> list[int]:
    return [len(p.read_text().splitlines()) for p in tmp.glob("exec-*")]


@pytest.fixture
def qos(monkeypatch: pytest.MonkeyPatch, site: SiteLimits) -> Iterator[Any]:
    """``use(name)``: submit (sbatch and metalab's discovery) under QOS ``name``."""

    def use(name: str) -> SiteLimits:
        monkeypatch.setenv("SBATCH_QOS", name)
        return slurm_limits.discover(refresh=True)

    yield use
    slurm_limits.discover(refresh=True)


class QueuePeak:
    """Polls ``squeue`` for the most jobs of a QOS the user had queued at once."""

    def __init__(self, qos: str) -> None:
        self.qos, self.peak, self.samples = qos, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(
                ["squeue", "--me", "-h", "-r", "-q", self.qos, "-o", "%i"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                self.peak = max(self.peak, len(done.stdout.split()))
                self.samples += 1
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _cancel_all(handle: metalab.RunHandle) -> None:
    subprocess.run(["scancel", *handle.job_ids], check=False, capture_output=True)


def test_large_sweep_block_clamped_to_max_array_size(tmp_path: Path, qos: Any) -> None:
    """The spec's large_sweep SlurmConfig, unchanged, with 1002 runs: arrays of <= 1001.

    Without the clamp sbatch refuses ``--array=0-1001`` ("Invalid job array
    specification"). Executing 1002 one-run tasks takes minutes on this 2-core machine, so
    the test lets the cluster start them, then cancels the submission and checks that
    every run is accounted for exactly (the block's 12-run execution to completion is
    ``test_slurm_spec_blocks.py::test_large_sweep_block_scaled_down_runs``).
    """
    limits = qos("bigsubmit")  # room for more than one MaxArraySize of tasks
    assert limits.max_array_size == 1001 and limits.submit_limit == 2000
    exp = _exp("site_large_sweep", tmp_path, 1002)
    (tmp_path / "ready").touch()
    handle = metalab.run(
        exp,
        store=str(tmp_path / "store"),
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(
                partition="low",
                time="1:00:00",
                max_array_size=10000,  # Auto-shard into chunks of 10k
                max_concurrent=500,  # Run up to 500 tasks at once
            )
        ),
    )
    try:
        launch = handle._launch
        assert [count for _job, _offset, count in launch.shards] == [1001, 1]
        # Both arrays were accepted and are in the queue, the big one with 1001 tasks.
        done = subprocess.run(
            ["squeue", "--me", "-h", "-r", "-o", "%F", "-j", ",".join(handle.job_ids)],
            capture_output=True,
            text=True,
            check=True,
        )
        queued = done.stdout.split()
        assert set(queued) <= set(handle.job_ids) and queued.count(handle.job_ids[0]) > 900
        deadline = time.monotonic() + 120
        while handle.status.completed < 5 and time.monotonic() < deadline:
            time.sleep(1)
        handle.cancel()
        assert launch.wait(timeout=120)
    finally:
        _cancel_all(handle)
    status = handle.status
    assert status.completed >= 5 and status.failed == 0
    assert status.completed + status.cancelled == 1002
    # No run executed twice; every completed one executed (a run the cancel interrupted
    # may have started without completing).
    executions = _executions(tmp_path)
    assert set(executions) == {1} and len(executions) >= status.completed


def test_waves_never_exceed_the_submit_limit(tmp_path: Path, qos: Any) -> None:
    limits = qos("tinysubmit")
    assert limits.submit_limit == 8
    exp = _exp("site_waves", tmp_path, 15)  # 15 runs, 1 per task
    (tmp_path / "ready").touch()
    peak = QueuePeak("tinysubmit")
    handle = metalab.run(
        exp,
        store=str(tmp_path / "store"),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(time="10:00", memory="300M")),
    )
    try:
        # First wave: 8 - 2 (room for the wave job, queued then running) = 6 tasks.
        assert [count for _job, _offset, count in handle._launch.shards] == [6]
        results = handle.result()
    finally:
        high = peak.stop()
        _cancel_all(handle)
    assert len(results) == 15 and all(r.status.value == "success" for r in results)
    assert sorted(_executions(tmp_path)) == [1] * 15  # each run executed exactly once
    assert peak.samples > 10 and 6 <= high <= 8
    # Three waves (6 + 6 + 3 tasks), each released by the wave job of the one before.
    assert len(handle.job_ids) == 3 + 2  # 3 arrays + 2 wave jobs
    # Reconnecting follows the whole chain.
    again = metalab.reconnect(str(tmp_path / "store"))
    assert again.status.completed == 15 and again.job_ids == handle.job_ids


def test_cancel_in_the_first_wave_accounts_for_every_run(tmp_path: Path, qos: Any) -> None:
    qos("tinysubmit")
    exp = _exp("site_wave_cancel", tmp_path, 15)
    (tmp_path / "ready").touch()
    handle = metalab.run(
        exp,
        store=str(tmp_path / "store"),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(time="10:00", memory="300M")),
    )
    try:
        deadline = time.monotonic() + 120
        while handle.status.completed == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        handle.cancel()
        assert handle._launch.wait(timeout=120)
    finally:
        _cancel_all(handle)
    status = handle.status
    # Runs of the waves never released count as cancelled, like the queued ones.
    assert status.completed >= 1 and status.failed == 0 and status.pending == 0
    assert status.completed + status.cancelled == 15
    assert not [n for n in _queued_names() if "site_wave_cancel" in n]
    executions = _executions(tmp_path)
    assert set(executions) <= {1} and len(executions) >= status.completed


def test_auto_packing_from_measured_runs(tmp_path: Path, qos: Any) -> None:
    qos("smallsubmit")
    exp = _exp("site_auto", tmp_path, 400)
    store = str(tmp_path / "store")
    # First attempt, locally: even runs succeed (their durations are measured), odd fail.
    first = metalab.run(exp, store=store, executor=metalab.ThreadExecutor(max_workers=2))
    first.result()
    assert (first.status.completed, first.status.failed) == (200, 200)
    (tmp_path / "ready").touch()
    peak = QueuePeak("smallsubmit")
    handle = metalab.run(
        exp,
        store=store,
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(time="10:00", memory="300M", runs_per_task="auto")
        ),
    )
    try:
        launch = handle._launch
        block = launch.runs_per_task
        # Trivial measured runs: the block is bounded by keeping the 8 slots busy
        # (4 tasks a slot) and by fitting the headroom of 20 in one go.
        assert block == 10 and [c for _j, _o, c in launch.shards] == [20]
        results = handle.result()
    finally:
        high = peak.stop()
        _cancel_all(handle)
    assert len(results) == 400 and all(r.status.value == "success" for r in results)
    assert high <= 20
    counts = sorted(_executions(tmp_path))
    assert counts == [1] * 200 + [2] * 200  # odd runs: one failure here, then once on SLURM


def _queued_names() -> list[str]:
    done = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%j"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_a_sweep_that_cannot_fit_fails_before_any_sbatch(tmp_path: Path, qos: Any) -> None:
    store = tmp_path / "store"
    exp = _exp("site_nofit", tmp_path, 30)
    too_long = metalab.SlurmConfig(partition="high", time="6:00:00")
    with pytest.raises(SlurmConfigError, match=r"MaxTime of partition 'high'.*time='4:00:00'"):
        metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(too_long))
    # The user's queue is full: 19 held jobs of smallsubmit (limit 20) leave no room.
    qos("smallsubmit")
    held = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--array=0-18", "--mem=50M", "--wrap", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        with pytest.raises(SlurmConfigError, match=r"19 job\(s\) of yours are queued") as info:
            metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor())
        assert "QOS smallsubmit MaxSubmitJobsPerUser=20" in str(info.value)
        assert not [n for n in _queued_names() if "site_nofit" in n]
    finally:
        subprocess.run(["scancel", held], check=False)
    # Nothing half-submitted: no launch was recorded, no log directory was made.
    assert not (store / "slurm").exists()
    assert not list(store.glob("**/launch-*"))


def test_dry_run_shows_limits_and_layout(
    tmp_path: Path, qos: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    qos("bigsubmit")  # no other test queues jobs of this QOS while this one runs
    exp = _exp("site_dry", tmp_path, 3000)
    metalab.run(
        exp,
        store=str(tmp_path / "store"),
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(time="1:00:00", max_array_size=10000, max_concurrent=500)
        ),
        dry_run=True,
    )
    out = capsys.readouterr().out
    assert "site: MaxArraySize=1001, MaxJobCount=5000" in out
    assert "site: partition low (default): MaxTime=12:00:00" in out
    assert "QOS bigsubmit: MaxSubmitJobsPerUser=2000" in out
    assert "note: max_array_size=10000 lowered to the site's MaxArraySize=1001" in out
    assert "waves: 2 of at most 1998 task(s)" in out
    assert "array tasks: 1998 in the first of 2 waves (1 run(s) per task), arrays: 2" in out
    assert "--array=0-1000%250" in out and "--array=0-996%250" in out
    assert not [n for n in _queued_names() if "site_dry" in n]
