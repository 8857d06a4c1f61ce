"""Run every benchmark and print one table; also write bench-results/results.json.

Each ``benches/bench_*.py`` module exposing ``main(quick) -> list[Measurement]`` is called
in turn (plan, scale, resume, executors, PostgreSQL, SLURM submission, the spec's
large_sweep executed on the cluster, worker start-up, dashboard). A module that is
missing or fails shows up as a row carrying the error instead of stopping the others.
PostgreSQL and SLURM benchmarks need their services (``METALAB_TEST_POSTGRES_URL``,
a SLURM cluster).

Run: ``uv run python benches/run.py [--quick]`` (``--quick`` is what CI runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Measurement, peak_rss_mb

SUITES = (
    "bench_plan",
    "bench_scale",
    "bench_resume",
    "bench_executors",
    "bench_postgres",
    "bench_slurm",
    "bench_large_sweep",
    "bench_worker_startup",
    "bench_ui",
)
RESULTS = Path(__file__).resolve().parent.parent / "bench-results" / "results.json"


def _run_suite(name: str, quick: bool) -> tuple[list[Measurement], str]:
    path = Path(__file__).resolve().parent / f"{name}.py"
    if not path.exists():
        return [], "not present"
    try:
        module = importlib.import_module(name)
        rows = module.main(quick)
        return list(rows or []), ""
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        return [], f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _as_dict(row: Any) -> dict[str, Any]:
    """A Measurement, a dict or any other row (a tuple...) as a JSON-ready dict."""
    if hasattr(row, "as_dict"):
        return dict(row.as_dict())
    if isinstance(row, dict):
        return dict(row)
    if isinstance(row, tuple | list) and row:
        return {"stage": str(row[0]), "value": [str(v) for v in row[1:]]}
    return {"stage": str(row)}


def main(quick: bool = False) -> list[dict[str, Any]]:
    """Run all suites, print the combined table and write the JSON results."""
    results: list[dict[str, Any]] = []
    for name in SUITES:
        started = time.perf_counter()
        rows, error = _run_suite(name, quick)
        for row in rows:
            results.append({**_as_dict(row), "suite": name})
        if error:
            results.append({"suite": name, "stage": "(error)", "error": error})
        print(f"[{name}] {time.perf_counter() - started:.1f}s {error}", flush=True)

    print(
        f"\nall benchmarks ({'quick' if quick else 'full'}); peak RSS of this process "
        f"{peak_rss_mb():.0f} MB"
    )
    header = (
        f"{'suite':<16} {'stage':<46} {'size':>8} {'median':>9} {'peak MB':>8} {'floor':>9}  target"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['suite']:<16} {'ERROR: ' + r['error']}")
            continue
        if "median_s" not in r:
            print(f"{r['suite']:<16} {r['stage'][:46]:<46} {' '.join(r.get('value', []))}")
            continue
        floor = f"{r['floor_s']:.3f}s" if r.get("floor_s") is not None else ""
        print(
            f"{r['suite']:<16} {r['stage'][:46]:<46} {r['size']:>8} {r['median_s']:>8.3f}s "
            f"{r['peak_mb']:>8.1f} {floor:>9}  {r.get('target', '')}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "date": dt.datetime.now(dt.UTC).isoformat(),
                "quick": quick,
                "python": platform.python_version(),
                "machine": platform.platform(),
                "results": results,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwrote {RESULTS}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, < 2 minutes)")
    main(parser.parse_args().quick)
