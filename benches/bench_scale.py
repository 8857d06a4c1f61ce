"""Scale benchmark: 300,000 runs end to end (grid 2000 x 50 x 3 replicates).

Stages: (1) plan, (2) resume check with half done, (3) status scan vs a bare
``os.scandir`` floor, (4) record writing through the default in-process executor,
(5) ``load_results`` + ``to_dataframe`` of every stored record vs a single-threaded
read-every-file floor (measured in a fresh subprocess so its peak RSS is its own),
(6) the same through the results index, (7) with ``--cold`` (root): one load via the
index and one without it, each after dropping the page cache.

Run: ``uv run python benches/bench_scale.py [--quick] [--cold]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import metalab
from _common import Measurement, measure, print_table
from metalab.plan import RunPlan
from metalab.records import StoredState
from metalab.store.file import FileStore


def _experiment(genes: int, values: int, replicates: int, operation: Any = None) -> Any:
    return metalab.Experiment(
        name="scale",
        version="0.1",
        context={"atlas": "v1"},
        operation=operation or (lambda: None),
        params=metalab.grid(gene=list(range(genes)), expr_val=list(range(values))),
        seeds=metalab.seeds(base=42, replicates=replicates),
    )


@metalab.operation
def _three_metrics(params: dict[str, Any], capture: Any) -> None:
    capture.metric("score", params["gene"] * 0.5)
    capture.metric("loss", 1.0 / (1 + params["expr_val"]))
    capture.metric("steps", params["expr_val"])


def _touch_markers(root: Path, run_ids: list[str], suffix: str) -> None:
    for shard in {r[:2] for r in run_ids}:
        (root / shard).mkdir(parents=True, exist_ok=True)
    for run_id in run_ids:
        os.close(os.open(root / run_id[:2] / f"{run_id}{suffix}", os.O_CREAT | os.O_WRONLY))


def _scandir_ids(root: Path, suffix: str) -> set[str]:
    found: set[str] = set()
    if root.is_dir():
        for shard in os.scandir(root):
            found.update(e.name[: -len(suffix)] for e in os.scandir(shard.path))
    return found


def _write_chunk(args: tuple[str, str, int, int, int, int]) -> None:
    root, template_json, start, stop, values, replicates = args
    template = json.loads(template_json)
    runs = Path(root) / "runs"
    for task in range(start, stop):
        run_id = secrets.token_hex(16)
        gene, rest = divmod(task, values * replicates)
        expr_val, replicate = divmod(rest, replicates)
        doc = dict(template)
        doc.update(
            run_id=run_id,
            task_index=task,
            replicate=replicate,
            params={"gene": gene, "expr_val": expr_val},
            metrics={"score": gene * 0.5, "loss": 1.0 / (1 + expr_val), "steps": expr_val},
        )
        directory = runs / run_id[:2]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{run_id}.json").write_bytes(json.dumps(doc).encode())


def generate_store(
    root: Path, template: dict[str, Any], total: int, values: int, replicates: int
) -> None:
    """Write ``total`` record files cloned from a real record (2 processes)."""
    text = json.dumps(template)
    step = 10_000
    chunks = [
        (str(root), text, s, min(s + step, total), values, replicates)
        for s in range(0, total, step)
    ]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_write_chunk, chunks)


_LOAD_CHILD = r"""
import json, os, resource, sys, time
import metalab
root, mode = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if mode == "load":
    results = metalab.load_results(root)
    frame = results.to_dataframe()
    rows = len(frame)
else:
    rows = 0
    for shard in os.scandir(os.path.join(root, "runs")):
        for entry in os.scandir(shard.path):
            if entry.name.endswith(".json"):
                with open(entry.path, "rb") as handle:
                    handle.read()
                rows += 1
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_mb": rss, "rows": rows}))
"""


def _child(root: Path, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, str(root), mode],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _drop_caches() -> None:
    """Empty the page cache (root only): the next read comes from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _cold_loads(big: Path, total: int) -> list[Measurement]:
    """One cold load through the index, then one without it (index moved aside)."""
    _drop_caches()
    cold_index = _child(big, "load")
    aside = big.parent / "index-aside"
    (big / "index").rename(aside)
    try:
        _drop_caches()
        cold_records = _child(big, "load")
    finally:
        aside.rename(big / "index")
    assert cold_index["rows"] == cold_records["rows"] == total
    return [
        Measurement(
            "(7) cold cache: via the index",
            total,
            [cold_index["seconds"]],
            cold_index["rss_mb"],
            target="<= 3 s cold",
        ),
        Measurement(
            "    cold cache: records only (no index)",
            total,
            [cold_records["seconds"]],
            cold_records["rss_mb"],
        ),
    ]


def main(quick: bool = False, cold: bool = False) -> list[Measurement]:
    """Run the scale benchmarks and print their table."""
    genes, values, replicates = (100, 50, 3) if quick else (2000, 50, 3)
    writes = 1_000 if quick else 20_000
    exp = _experiment(genes, values, replicates)
    total = exp.total_runs
    rows: list[Measurement] = []
    tmp = Path(tempfile.mkdtemp(prefix="metalab-scale-"))
    try:
        # (1) plan
        rows.append(
            measure(
                "(1) plan: RunPlan(...).run_ids",
                total,
                lambda: RunPlan(exp).run_ids,
                target="<= 0.3 s, <= 200 MB",
            )
        )
        plan = RunPlan(exp)
        run_ids = plan.run_ids
        store = FileStore(tmp / "status")
        done_ids = run_ids[::2]
        _touch_markers(store.layout.done_dir, done_ids, ".done")
        # A done run also has its record: states() only trusts a marker whose record
        # file is listed next to it (names are all the scan reads, so empty files do).
        _touch_markers(store.layout.runs_dir, done_ids, ".json")
        _touch_markers(store.layout.failed_dir, run_ids[1:1000:2], ".failed")

        # (2) resume check
        resume = measure(
            "(2) resume check: store.states(plan)",
            total,
            lambda: store.states(run_ids),
            target="<= 0.3 s",
        )
        assert store.states(run_ids).count(StoredState.DONE) == len(done_ids)
        rows.append(resume)

        # (3) status scan (what RunHandle.status does for a store-tracked launch)
        def status() -> tuple[int, int]:
            states = store.states(run_ids)
            return states.count(StoredState.DONE), states.count(StoredState.FAILED)

        def floor() -> tuple[int, int]:
            done = _scandir_ids(store.layout.done_dir, ".done")
            done &= _scandir_ids(store.layout.runs_dir, ".json")
            failed = _scandir_ids(store.layout.failed_dir, ".failed")
            return sum(r in done for r in run_ids), sum(r in failed for r in run_ids)

        scan = measure("(3) status scan: states()", total, status, target="<= 2x floor")
        bare = measure("    floor: bare os.scandir + set lookups", total, floor)
        assert status() == floor()
        scan.floor_seconds = bare.median
        rows += [scan, bare]

        # (4) record writing through the default executor (one background thread)
        write_exp = _experiment(writes // 10, 10, 1, _three_metrics)
        counter = iter(range(100))

        def write() -> None:
            target = tmp / f"write-{next(counter)}"
            handle = metalab.run(write_exp, store=str(target))
            assert handle.result() is not None and handle.status.completed == writes

        writing = measure(
            "(4) record writing, default executor",
            writes,
            write,
            target=">= 2000 records/s",
            trace_memory=False,
        )
        rate = writes / writing.median
        writing.extra["records_per_s"] = rate
        writing.target = f">= 2000 records/s (got {rate:.0f}/s)"
        rows.append(writing)

        # (5) load_results + to_dataframe of `total` stored records
        template = json.loads(next((tmp / "write-0" / "runs").glob("*/*.json")).read_bytes())
        big = tmp / "big"
        started = time.perf_counter()
        generate_store(big, template, total, values, replicates)
        generated = time.perf_counter() - started
        loads = [_child(big, "load") for _ in range(3)]
        floors = [_child(big, "floor") for _ in range(3)]
        assert all(r["rows"] == total for r in loads + floors), (loads, floors)
        load = Measurement(
            "(5) load_results + to_dataframe",
            total,
            [r["seconds"] for r in loads],
            max(r["rss_mb"] for r in loads),
            target="<= 5 s, <= 2 GB RSS",
            extra={"generate_s": generated, "rss_is_process_peak": True},
        )
        read_floor = Measurement(
            "    floor: read every record file, 1 pass",
            total,
            [r["seconds"] for r in floors],
            max(r["rss_mb"] for r in floors),
        )
        load.floor_seconds = read_floor.median
        rows += [load, read_floor]

        # (6) the same load through the results index (segments rebuilt from the records,
        # as `metalab store reindex` does), warm, and cold when caches can be dropped
        started = time.perf_counter()
        FileStore(big).reindex()
        reindexed = time.perf_counter() - started
        indexed = [_child(big, "load") for _ in range(3)]
        assert all(r["rows"] == total for r in indexed), indexed
        via_index = Measurement(
            "(6) load_results + to_dataframe, via the index",
            total,
            [r["seconds"] for r in indexed],
            max(r["rss_mb"] for r in indexed),
            target="<= 1.5 s warm",
            extra={"reindex_s": reindexed, "rss_is_process_peak": True},
        )
        via_index.floor_seconds = read_floor.median
        rows.append(via_index)
        if cold:
            rows += _cold_loads(big, total)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        f"scale benchmark: {genes} x {values} grid x {replicates} replicates = "
        f"{total} runs (peak MB: traced Python memory; stage 5: process RSS)",
        rows,
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument(
        "--cold", action="store_true", help="also load with a cold page cache (root only)"
    )
    arguments = parser.parse_args()
    main(arguments.quick, arguments.cold)
