"""The results index under concurrent SLURM writers: one segment per array task process.

Each array task is a worker process of its own (its own writer identity), appending to
its own segment of the shared store; the answers loaded through the segments equal
those of the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab import _core
from metalab.executors.slurm import SlurmLaunch
from metalab.store.file import FileStore

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def index_op(context: Any, params: Any, seeds: Any, capture: Any, runtime: Any) -> None:
    """Fail one run in six, record a metric otherwise."""
    if params["x"] % 6 == 5:
        raise ValueError(f"bad x {params['x']}")
    capture.metric("y", params["x"] * 2)


def test_array_tasks_write_one_segment_each(tmp_path: Path, no_leftover_jobs: list[str]) -> None:
    exp = metalab.Experiment(
        name="indexed",
        version="1",
        context={},
        operation=index_op,
        params=metalab.grid(x=list(range(12))),
        seeds=metalab.seeds(base=5, replicates=1),
    )
    store_dir = tmp_path / "store"
    handle = metalab.run(
        exp,
        store=str(store_dir),
        executor=metalab.SlurmExecutor(metalab.SlurmConfig(runs_per_task=3, time="5")),
    )
    assert isinstance(handle._launch, SlurmLaunch)
    no_leftover_jobs.extend(handle._launch.job_ids)
    results = handle.result(timeout=120)
    assert len(results) == 12 and len(results.failed) == 2
    writers = {r.record.provenance.pid for r in results if r.record.provenance}
    store = FileStore(store_dir)
    segments = store.layout.segments("indexed:1")
    assert sorted(int(p.name.split(".")[1]) for p in segments) == sorted(writers)
    assert len(segments) == 4  # 12 runs, 3 per array task
    data, problems = store.load_columns()
    assert store.last_index_stats["indexed"] == 12
    assert store.last_index_stats["from_records"] == 0
    expected = _core.load_record_columns(store.layout.scan, None, None)
    assert expected.pop("problems") == [] and not problems
    assert data == expected
