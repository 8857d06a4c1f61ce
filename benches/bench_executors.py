"""Benchmark: executor throughput on runs that only record one metric.

Measures wall time from ``metalab.run()`` until ``handle.result()`` returns (planning,
execution, record writes and loading the results), into a fresh FileStore each time, for
the default in-process ThreadExecutor and for ProcessExecutor(max_workers=2) (spawn and
fork; worker start-up included). Targets: >= 1,000 runs/s in-process, >= 500 runs/s with
two worker processes. Two last stages time the run claims alone (what each executed run
pays so two launches never both execute it): claim in batches of 8, release with the
next batch, renewals, into a fresh FileStore (which also makes its 256 claim shard
directories) and into one whose shard directories exist; target <= 0.08 ms CPU per run.
Prints a table::

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


def _claims_case(n: int, repeats: int, root: Path, fresh: bool) -> Measurement:
    """Claim + release + renew of ``n`` runs as a launch's claim queue does it.

    ``fresh``: into a new store, which pays the one-time creation of its claim shard
    directories (256 mkdirs); else into one whose shard directories exist (a relaunch).
    """
    from metalab.plan import RunPlan
    from metalab.store.claims import new_owner
    from metalab.store.file import FileStore

    run_ids = RunPlan(_experiment(n)).run_ids
    path = root / "claims_only"
    target_ms = 0.08

    def claim_all(store: FileStore, owner: str) -> None:
        finished: list[str] = []
        for at in range(0, n, 8):
            batch = run_ids[at : at + 8]
            if store.claim(batch, owner, 120.0) != batch:
                raise RuntimeError("a claim of an unclaimed store was refused")
            store.release(finished, owner)
            if at % 400 == 0:  # a heartbeat every ~40 s is far rarer than this
                store.renew(batch, owner, 120.0)
            finished = batch
        store.release(finished, owner)

    def setup() -> None:
        shutil.rmtree(path, ignore_errors=True)
        if not fresh:
            claim_all(FileStore(path), new_owner())

    cpu = [0.0]

    def go() -> None:
        # CPU of the claim calls only (not the setup's removal of the previous store).
        before = _cpu_seconds()
        claim_all(FileStore(path), new_owner())
        cpu[0] += _cpu_seconds() - before

    row = measure(
        "claims alone, " + ("fresh store" if fresh else "shard dirs exist"),
        n,
        go,
        repeats=repeats,
        setup=setup,
        trace_memory=False,
        target=f"<= {target_ms} ms CPU/run",
    )
    cpu_ms = 1000 * cpu[0] / (n * repeats)
    row.extra["cpu_ms_per_run"] = round(cpu_ms, 3)
    row.extra["runs_per_s"] = round(n / row.median, 1)
    row.extra["meets_target"] = cpu_ms <= target_ms
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
        rows += [_claims_case(n, repeats, root, fresh) for fresh in (True, False)]
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
