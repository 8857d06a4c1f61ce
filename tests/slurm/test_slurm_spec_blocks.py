"""The code blocks of the spec's "SLURM Cluster Execution" section, run as written.

User code the blocks assume (``exp``, ``my_context``, ``my_operation``) is defined here.
The blocks name partitions ``gpu`` and ``cpu``: missing ones are created on the test
cluster for the test (``scontrol create``) and deleted afterwards. The 300,000-run grid
executes scaled down to 12 runs; its planning and dry run use the full size.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import metalab
from metalab.executors.slurm_limits import discover
from services import services_required

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def my_operation(params, seeds, capture):  # type: ignore[no-untyped-def]
    """Stand-in for the user's operation."""
    capture.metric("value", sum(v for v in params.values() if isinstance(v, int)))


my_context: dict[str, int] = {}


def _partitions() -> set[str]:
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.fixture
def partitions() -> Iterator[None]:
    """Make sure partitions ``gpu`` and ``cpu`` exist (on the cluster's node) for the test."""
    created = []
    for name in ("gpu", "cpu"):
        if name not in _partitions():
            subprocess.run(
                [
                    "scontrol",
                    "create",
                    f"PartitionName={name}",
                    "Nodes=ALL",
                    "State=UP",
                    "MaxTime=INFINITE",
                ],
                check=True,
                capture_output=True,
            )
            created.append(name)
    yield
    for name in created:
        subprocess.run(["scontrol", "delete", f"PartitionName={name}"], check=False)


@pytest.fixture
def scratch() -> Iterator[None]:
    """The blocks write to /scratch/runs/...; start from and leave a clean place."""
    for name in ("my_exp", "large_sweep"):
        shutil.rmtree(f"/scratch/runs/{name}", ignore_errors=True)
    yield
    for name in ("my_exp", "large_sweep"):
        shutil.rmtree(f"/scratch/runs/{name}", ignore_errors=True)


def _has_gpu_gres() -> bool:
    out = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True, check=False)
    return "gpu" in "".join(line for line in out.stdout.splitlines() if "Gres=" in line)


@pytest.mark.usefixtures("partitions", "scratch")
def test_submit_block_and_reconnect_block() -> None:
    if not _has_gpu_gres():
        message = "the SLURM cluster declares no GPU (Gres=gpu), which the spec block requests"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    exp = metalab.Experiment(
        name="my_exp",
        version="1",
        context=my_context,
        operation=my_operation,
        params=metalab.grid(a=[1, 2], b=[3, 4]),
        seeds=metalab.seeds(base=1),
    )
    # --- spec block ---
    handle = metalab.run(
        exp,
        store="/scratch/runs/my_exp",  # Shared filesystem path
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(
                partition="gpu",
                time="2:00:00",
                cpus=4,
                memory="16G",
                gpus=1,
                max_concurrent=100,  # Limit concurrent tasks
            )
        ),
        progress=True,  # Watch job progress
    )

    # Block until all jobs complete (shows live progress)
    results = handle.result()
    # --- end ---
    assert len(results) == 4 and all(r.status.value == "success" for r in results)
    # --- spec block ---
    # In a new session, reconnect to watch progress
    handle = metalab.reconnect("/scratch/runs/my_exp", progress=True)
    results = handle.result()

    # Or just check status
    handle = metalab.reconnect("/scratch/runs/my_exp")
    print(handle.status)  # RunStatus(total=100, completed=45, ...)
    # --- end ---
    assert len(results) == 4 and handle.status.completed == 4


def _large_sweep_block(genes: int, expr_vals: int, dry_run: bool) -> metalab.RunHandle:
    # --- spec block (grid sizes are parameters so it can run scaled down) ---
    # This works efficiently even with 300,000+ runs
    exp = metalab.Experiment(
        name="large_sweep",
        version="0.1",
        context=my_context,
        operation=my_operation,
        params=metalab.grid(
            gene=list(range(genes)),  # 2000 genes
            expr_val=list(range(expr_vals)),  # 50 expression values
        ),
        seeds=metalab.seeds(base=42, replicates=3),  # 3 replicates
    )  # 300,000 total runs

    handle = metalab.run(
        exp,
        store="/scratch/runs/large_sweep",
        executor=metalab.SlurmExecutor(
            metalab.SlurmConfig(
                partition="cpu",
                time="1:00:00",
                max_array_size=10000,  # Auto-shard into chunks of 10k
                max_concurrent=500,  # Run up to 500 tasks at once
            )
        ),
        dry_run=dry_run,
    )
    # --- end ---
    return handle


@pytest.mark.usefixtures("partitions", "scratch")
def test_large_sweep_block_scaled_down_runs() -> None:
    handle = _large_sweep_block(2, 2, dry_run=False)
    results = handle.result(timeout=120)
    assert len(results) == 12 and all(r.status.value == "success" for r in results)


@pytest.mark.usefixtures("partitions", "scratch")
def test_large_sweep_block_full_size_plans(capsys: pytest.CaptureFixture[str]) -> None:
    handle = _large_sweep_block(2000, 50, dry_run=True)
    assert handle.status.total == 300000 and len(set(handle.run_ids)) == 300000
    out = capsys.readouterr().out
    assert "--partition=cpu" in out
    # "Auto-shard into chunks of 10k" as far as the cluster allows: arrays of at most
    # MaxArraySize tasks (1001 on a site), and no more tasks at once than the user may
    # queue (the rest in waves).
    limits = discover(refresh=True)
    chunk = min(10000, limits.max_array_size or 10000)
    counts = [int(n) for n in re.findall(r"  array \d+: (\d+) tasks, offset", out)]
    assert counts and max(counts) == min(chunk, sum(counts)) and all(c <= chunk for c in counts)
    if limits.submit_limit is None and limits.max_job_count is None:
        assert "arrays: 30" in out
    else:
        room = min(c for c in (limits.submit_limit, limits.max_job_count) if c is not None)
        assert sum(counts) <= room and "waves: " in out
    assert not Path("/scratch/runs/large_sweep/blobs").exists()
