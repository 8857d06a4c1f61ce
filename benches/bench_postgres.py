"""PostgresStore benchmark: write throughput from 2 processes, and 100,000 runs -> DataFrame.

Usage: ``METALAB_TEST_POSTGRES_URL=postgresql://... uv run python benches/bench_postgres.py
[--quick]``. Each phase uses a throw-away schema, dropped at the end. Prints a table.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import sys
import time
import uuid

import pandas  # noqa: F401 - imported up front so its one-off import is not timed

from metalab.records import RunRecord, RunState, StoredState
from metalab.results import load_results
from metalab.store.bundle import RunBundle
from metalab.store.postgres import PostgresStore
from metalab.store.record_codec import encode_record


def _record(i: int, experiment_id: str) -> RunRecord:
    now = dt.datetime.now(dt.UTC)
    return RunRecord(
        run_id=f"{i:016x}",
        experiment_id=experiment_id,
        status=RunState.SUCCESS,
        context_fingerprint="c" * 16,
        params_fingerprint=f"{i:016x}",
        seed_fingerprint="s" * 16,
        params={"lr": 0.001 * (i % 100), "depth": i % 7, "name": f"cfg{i % 13}"},
        task_index=i,
        replicate=i % 3,
        metrics={"loss": 1.0 / (i + 1), "accuracy": (i % 1000) / 1000},
        metric_series={"loss": [[s, 1.0 / (s + i + 1)] for s in range(5)]},
        started_at=now,
        finished_at=now,
    )


def _writer(locator: str, worker: int, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    store = PostgresStore.from_locator(locator)
    store.ping()
    start = time.perf_counter()
    for i in range(n):
        rec = _record(worker * 10_000_000 + i, "bench:write")
        sink = store.open_log(rec.run_id)
        sink.write_line("started")
        sink.write_line("finished")
        store.put_record(rec)
        store.mark(rec.run_id, RunState.SUCCESS)
    out.put(time.perf_counter() - start)
    store.close()


def _log_line_cost(store: PostgresStore, lines: int) -> float:
    sink = store.open_log("loglatency")
    start = time.perf_counter()
    for i in range(lines):
        sink.write_line(f"line {i}")
    return (time.perf_counter() - start) / lines * 1000


def main(quick: bool = False) -> list[tuple[str, str]]:
    """Run the benchmark; print and return ``(measure, value)`` rows."""
    url = os.environ.get("METALAB_TEST_POSTGRES_URL", "postgresql://metalab@127.0.0.1:5432/metalab")
    sep = "&" if "?" in url else "?"
    locator = f"{url}{sep}schema=bench_{uuid.uuid4().hex[:12]}"
    per_proc = 300 if quick else 2000
    n_load = 10_000 if quick else 100_000
    rows: list[tuple[str, str]] = []
    store = PostgresStore.from_locator(locator)
    try:
        store.ping()
        rows.append(("log line (async commit), ms/line", f"{_log_line_cost(store, 500):.3f}"))
        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        procs = [ctx.Process(target=_writer, args=(locator, w, per_proc, queue)) for w in range(2)]
        wall = time.perf_counter()
        for p in procs:
            p.start()
        times = [queue.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        wall = time.perf_counter() - wall
        total = 2 * per_proc
        rows.append((f"write: {total} runs from 2 processes (2 log lines+record+marker)", ""))
        rows.append(("  runs/s (aggregate, worker time)", f"{total / max(times):.0f}"))
        rows.append(("  runs/s (incl. process start)", f"{total / wall:.0f}"))
        # Bulk-fill n_load runs (the transfer path) then load them with SQL.
        start = time.perf_counter()
        batch: list[RunBundle] = []
        for i in range(n_load):
            rec = _record(i, "bench:load")
            batch.append(RunBundle(rec.run_id, encode_record(rec).decode(), "success"))
            if len(batch) == 2000:
                store.write_bundles(batch)
                batch = []
        if batch:
            store.write_bundles(batch)
        rows.append(
            (f"bulk import {n_load} runs, runs/s", f"{n_load / (time.perf_counter() - start):.0f}")
        )
        start = time.perf_counter()
        loaded = store.load_records(experiment_id="bench:load")
        t_records = time.perf_counter() - start
        start = time.perf_counter()
        results = load_results(store, experiment_id="bench:load")
        df = results.to_dataframe()
        t_df = time.perf_counter() - start
        assert len(loaded.records) == n_load and len(df) == n_load
        rows.append((f"load_records {n_load} runs, s", f"{t_records:.2f}"))
        rows.append((f"load_results + to_dataframe {n_load} runs, s", f"{t_df:.2f}"))
        ids = [f"{i:016x}" for i in range(n_load)]
        # Best of 3 (wall is noisy on a shared machine) and this process's CPU for it: the
        # rest of the wall time is the server's (planning + execution, see EXPLAIN).
        walls, cpus = [], []
        for _ in range(3):
            start, cpu_start = time.perf_counter(), time.process_time()
            states = store.states(ids)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu_start)
            assert all(state is StoredState.DONE for state in states)
        rows.append((f"states() for {n_load} ids (one query), s", f"{walls[0]:.2f}"))
        rows.append(("  best of 3, s / client CPU, s", f"{min(walls):.3f} / {min(cpus):.3f}"))
    finally:
        store.drop_schema()
        store.close()
    width = max(len(m) for m, _ in rows)
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 10))
    for measure, value in rows:
        print(f"{measure:<{width}}  {value}")
    return rows


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
