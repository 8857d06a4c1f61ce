"""Benchmark: executor throughput on runs that only record one metric.

Measures wall time from ``metalab.run()`` until ``handle.result()`` returns (planning,
execution, record writes and loading the results), into a fresh FileStore each time, for
the default in-process ThreadExecutor and for ProcessExecutor(max_workers=2) (spawn and
fork; worker start-up included). Targets: >= 1,000 runs/s in-process, >= 500 runs/s with
two worker processes. Prints a table::

    uv run python benches/bench_executors.py            # 2,000 runs, 3 repeats
    uv run python benches/bench_executors.py --quick    # 500 runs, 2 repeats
    uv run python benches/bench_executors.py --dir /dev/shm   # stores on a tmpfs
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import metalab
from _common import Measurement, measure, print_table
from metalab import ProcessExecutor
from metalab.executors.base import Executor
from metalab.executors.thread import ThreadExecutor


@metalab.operation
def record_one_metric(params: dict[str, Any], capture: Any) -> None:
    """The cheapest useful run: one metric, so the framework's overhead is what is timed."""
    capture.metric("value", params["i"])


def _experiment(n: int) -> metalab.Experiment:
    return metalab.Experiment(
        name="bench_executors",
        version="1",
        context={},
        operation=record_one_metric,
        params=metalab.grid(i=list(range(n))),
        seeds=metalab.seeds(base=0),
    )


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _case(
    label: str, make: Any, n: int, repeats: int, floor_rate: float, root: Path
) -> Measurement:
    exp = _experiment(n)
    store = root / label.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")

    def setup() -> None:
        shutil.rmtree(store, ignore_errors=True)

    def go() -> None:
        executor: Executor = make()
        results = metalab.run(exp, store=store, executor=executor).result()
        if len(results.successful) != n:
            raise RuntimeError(f"{label}: only {len(results.successful)} of {n} runs succeeded")

    cpu_before = _cpu_seconds()
    row = measure(
        label,
        n,
        go,
        repeats=repeats,
        setup=setup,
        trace_memory=False,
        target=f">= {floor_rate:.0f} runs/s",
    )
    rate = n / row.median
    # CPU per run (driver + reaped workers) is stable on a busy machine, unlike wall time.
    row.extra["cpu_ms_per_run"] = round(1000 * (_cpu_seconds() - cpu_before) / (n * repeats), 3)
    row.floor_seconds = n / floor_rate
    row.extra["runs_per_s"] = round(rate, 1)
    row.extra["meets_target"] = rate >= floor_rate
    return row


def main(quick: bool = False, store_dir: str | None = None) -> list[Measurement]:
    """Run the benchmark, print the table and return its rows.

    ``store_dir`` (default: ``$METALAB_BENCH_DIR`` or the system temp dir) is where the
    FileStores go; runs this small are bound by file-system syscalls, so the disk (or a
    tmpfs such as /dev/shm) matters as much as metalab's own overhead.
    """
    n = 500 if quick else 2000
    repeats = 2 if quick else 3
    parent = store_dir or os.environ.get("METALAB_BENCH_DIR") or None
    root = Path(tempfile.mkdtemp(prefix="metalab-bench-executors-", dir=parent))
    cases = [
        ("ThreadExecutor(1) default", lambda: ThreadExecutor(max_workers=1), 1000.0),
        ("ProcessExecutor(2) spawn", lambda: ProcessExecutor(max_workers=2), 500.0),
        (
            "ProcessExecutor(2) fork",
            lambda: ProcessExecutor(max_workers=2, mp_context="fork"),
            500.0,
        ),
    ]
    try:
        rows = [_case(label, make, n, repeats, rate, root) for label, make, rate in cases]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(f"executor throughput ({n} runs recording one metric, stores in {root})", rows)
    for row in rows:
        verdict = "ok" if row.extra["meets_target"] else "BELOW TARGET"
        print(
            f"{row.stage:<44} {row.extra['runs_per_s']:>9.1f} runs/s  "
            f"{row.extra['cpu_ms_per_run']:>7.3f} ms CPU/run  {verdict}"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 runs instead of 2,000")
    parser.add_argument("--dir", default=None, help="where the stores go (e.g. /dev/shm)")
    arguments = parser.parse_args()
    main(arguments.quick, arguments.dir)
