"""Scale benchmark: 300,000 runs end to end (grid 2000 x 50 x 3 replicates).

Stages: (1) plan, (2) resume check with half done, (3) status scan vs a bare
``os.scandir`` floor, (4) record writing through the default in-process executor,
(5) ``load_results`` + ``to_dataframe`` of every stored record vs a single-threaded
read-every-file floor (measured in a fresh subprocess so its peak RSS is its own),
(6) the same through the results index, next to its floor (reading the segments and
listing the shards), (7) with ``--cold`` (root): one load via the index, its floor, and
one load without the index, each after dropping the page cache.

Stages 5-7 run in fresh processes that import metalab, numpy and pandas *before* the
clock starts and, for cold runs, before the page cache is dropped (the parent drops it
once the child says it is ready): the figure is the load and ``to_dataframe()``, not
Python's start-up or pandas' import from a cold disk (here ``PYTHONDONTWRITEBYTECODE=1``
makes a pandas import compile its sources: ~1.6 s). Each of these stages also prints
its CPU seconds (user+sys, all threads) and the load average, since wall time is noisy
on a shared machine, and the index load's own stage breakdown
(``FileStore.last_index_seconds``).

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
import numpy, pandas  # imported before the clock (and before a cache drop) starts
root, mode = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()  # the parent drops the page cache (cold runs) before answering
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
start, cpu_start = time.perf_counter(), cpu()
stages = {}
if mode == "load":
    results = metalab.load_results(root)
    stages = getattr(results._table.store, "last_index_seconds", {})
    counts = getattr(results._table.store, "last_index_stats", {})
    stages = {**stages, "from_snapshot": (counts.get("from_snapshot", 0), 0.0)}
    frame = results.to_dataframe()
    rows = len(frame)
elif mode == "index_floor":
    # What a load through the index cannot avoid: read the segments, list the shards.
    rows = 0
    for folder, _dirs, files in os.walk(os.path.join(root, "index")):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                handle.read()
    for shard in os.scandir(os.path.join(root, "runs")):
        rows += sum(1 for entry in os.scandir(shard.path) if entry.name.endswith(".json"))
else:
    rows = 0
    for shard in os.scandir(os.path.join(root, "runs")):
        for entry in os.scandir(shard.path):
            if entry.name.endswith(".json"):
                with open(entry.path, "rb") as handle:
                    handle.read()
                rows += 1
seconds, cpu_s = time.perf_counter() - start, cpu() - cpu_start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "rss_mb": rss, "rows": rows,
                  "load1": os.getloadavg()[0], "stages": stages}))
"""


def _child(root: Path, mode: str, cold: bool = False) -> dict[str, Any]:
    """Time ``mode`` in a fresh process; with ``cold``, drop the page cache first.

    The child imports metalab, numpy and pandas, then waits: the cache is dropped (cold
    runs) only once those imports are done, so the cold figure is the load itself, not
    Python's start-up from a cold disk.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", _LOAD_CHILD, str(root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    if cold:
        _drop_caches()
    child.stdin.write("go\n")
    child.stdin.flush()
    out, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"bench child {mode!r} failed with exit code {child.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def _drop_caches() -> None:
    """Empty the page cache (root only): the next read comes from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _from_children(stage: str, total: int, runs: list[dict[str, Any]], **kw: Any) -> Measurement:
    """A measurement of child runs: wall seconds, plus CPU seconds and load average."""
    return Measurement(
        stage,
        total,
        [r["seconds"] for r in runs],
        max(r["rss_mb"] for r in runs),
        extra={
            "cpu_s": [round(r["cpu_s"], 3) for r in runs],
            "load1": [round(r["load1"], 2) for r in runs],
            "stages": runs[-1].get("stages", {}),
            "rss_is_process_peak": True,
        },
        **kw,
    )


def _cold_loads(big: Path, total: int) -> list[Measurement]:
    """Cold loads: through the index, its I/O floor, and without the index (moved aside)."""
    cold_index = _child(big, "load", cold=True)
    cold_floor = _child(big, "index_floor", cold=True)
    FileStore(big).layout.index_snapshot(None).unlink(missing_ok=True)
    cold_segments = _child(big, "load", cold=True)
    aside = big.parent / "index-aside"
    (big / "index").rename(aside)
    try:
        cold_records = _child(big, "load", cold=True)
    finally:
        aside.rename(big / "index")
    assert cold_index["rows"] == cold_records["rows"] == cold_floor["rows"] == total
    assert cold_segments["rows"] == total
    via_index = _from_children("(7) cold cache: via the index", total, [cold_index])
    via_index.target = "<= 3 s cold"
    via_index.floor_seconds = cold_floor["seconds"]
    return [
        via_index,
        _from_children("    floor: read segments + list shards, cold", total, [cold_floor]),
        _from_children("    cold cache: via the segments (no snapshot)", total, [cold_segments]),
        _from_children("    cold cache: records only (no index)", total, [cold_records]),
    ]


def _print_cpu(rows: list[Measurement]) -> None:
    """CPU seconds and load average of the child-process stages (wall time is noisy
    while other work shares the cores), and the index load's own stage breakdown."""
    print("\nCPU (user+sys) and 1-min load average of the subprocess stages:")
    for row in rows:
        if "cpu_s" not in row.extra:
            continue
        print(f"  {row.stage.strip():<46} cpu {row.extra['cpu_s']} s  load {row.extra['load1']}")
        stages = row.extra.get("stages") or {}
        if stages:
            parts = ", ".join(
                f"{k} {w:.0f}" if k == "from_snapshot" else f"{k} {w:.2f}/{c:.2f}"
                for k, (w, c) in stages.items()
            )
            print(f"      index stages (wall/cpu s): {parts}")


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
        load = _from_children(
            "(5) load_results + to_dataframe", total, loads, target="<= 5 s, <= 2 GB RSS"
        )
        load.extra["generate_s"] = generated
        read_floor = _from_children("    floor: read every record file, 1 pass", total, floors)
        load.floor_seconds = read_floor.median
        rows += [load, read_floor]

        # (6) the same load through the results index (segments rebuilt from the records,
        # as `metalab store reindex` does), warm, next to its own floor (reading the
        # segments and listing the shards: what no index-backed load can skip)
        started = time.perf_counter()
        FileStore(big).reindex()
        reindexed = time.perf_counter() - started
        # Through the segments: the column snapshot removed before each load (each of
        # which, at 20,000 records or more, saves it again: its cost is included).
        snapshot = FileStore(big).layout.index_snapshot(None)
        by_segments = []
        for _ in range(3):
            snapshot.unlink(missing_ok=True)
            by_segments.append(_child(big, "load"))
        # Then as a user's loads go: answered by the snapshot the last one saved (below
        # SNAPSHOT_MIN_RECORDS, as in --quick, there is none and the segments answer).
        indexed = [_child(big, "load") for _ in range(3)]
        index_floors = [_child(big, "index_floor") for _ in range(3)]
        assert all(r["rows"] == total for r in indexed + index_floors + by_segments), indexed
        via_segments = _from_children(
            "(6a) the same via the segments (no snapshot yet)", total, by_segments
        )
        via_index = _from_children(
            "(6) load_results + to_dataframe, via the index",
            total,
            indexed,
            target="<= 1.5 s warm",
        )
        via_index.extra["reindex_s"] = reindexed
        index_floor = _from_children("    floor: read segments + list shards", total, index_floors)
        via_index.floor_seconds = index_floor.median
        rows += [via_segments, via_index, index_floor]
        if cold:
            rows += _cold_loads(big, total)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        f"scale benchmark: {genes} x {values} grid x {replicates} replicates = "
        f"{total} runs (peak MB: traced Python memory; stage 5: process RSS)",
        rows,
    )
    _print_cpu(rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument(
        "--cold", action="store_true", help="also load with a cold page cache (root only)"
    )
    arguments = parser.parse_args()
    main(arguments.quick, arguments.cold)
