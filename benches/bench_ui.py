"""Dashboard benchmark: the JSON API of ``metalab ui`` on a 300,000-run FileStore.

The store holds the scale benchmark's sweep (grid 2000 genes x 50 expression values x 3
replicates, records cloned from a real one by ``bench_scale.generate_store``, three
metrics each) and a manifest of that experiment. A real uvicorn server on a loopback port
serves it and every stage is timed from the client side over HTTP (JSON encoding and the
socket included):

(0) first load: the first request of an experiment, which loads its run table
    (``load_results`` + ``to_dataframe``, then kept in memory);
(1) first runs-table page (50 rows, task order)                      target <= 300 ms
(2) a filtered and sorted page (two conditions, sort by a metric)    target <= 500 ms
(3) plot-builder data: score vs expr_val per gene, 2,000 x 50 points, each the mean
    and sd over 3 replicates (``metalab.plots.aggregate``)            target <= 1 s

Run: ``uv run python benches/bench_ui.py [--quick] [--store DIR]`` (``--quick``: 100 x 50
x 3 runs; ``--store``: keep the generated store there and reuse it next time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ui"))

import metalab
from _common import Measurement, peak_rss_mb, print_table
from bench_scale import _experiment, _three_metrics, generate_store

REPEATS = 5


def _template(tmp: Path) -> tuple[dict[str, Any], Path]:
    """A real record of the 'scale' experiment and the store its manifest is in."""
    exp = _experiment(2, 2, 1, _three_metrics)
    store = tmp / "template"
    metalab.run(exp, store=str(store), progress=False).result()
    record = json.loads(next((store / "runs").glob("*/*.json")).read_bytes())
    return record, store


def _get(base: str, path: str, **params: Any) -> tuple[float, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read()
    seconds = time.perf_counter() - start
    return seconds, json.loads(body)


def _stage(base: str, stage: str, size: int, target: str, path: str, **params: Any) -> Measurement:
    seconds = []
    doc: Any = None
    for _ in range(REPEATS):
        took, doc = _get(base, path, **params)
        seconds.append(took)
    extra = {"server_s": doc.get("seconds")} if isinstance(doc, dict) else {}
    if isinstance(doc, dict) and "points" in doc:
        extra["points"] = doc["points"]
    if isinstance(doc, dict) and "matched" in doc:
        extra["matched"] = doc["matched"]
    return Measurement(stage, size, seconds, peak_rss_mb(), target=target, extra=extra)


def _build(big: Path, tmp: Path, total: int, values: int, replicates: int) -> str:
    """Fill ``big`` with ``total`` records and the experiment's manifest (reused if there).

    Writing 300,000 record files takes minutes on a loaded 2-core machine, so a store
    kept with ``--store DIR`` is reused when it already holds exactly ``total`` records.
    """
    done = big / "complete.json"
    if done.exists() and json.loads(done.read_text()).get("total") == total:
        return str(json.loads(done.read_text())["experiment_id"])
    shutil.rmtree(big, ignore_errors=True)
    template, template_store = _template(tmp)
    generate_store(big, template, total, values, replicates)
    shutil.copytree(template_store / "experiments", big / "experiments")
    experiment = str(template["experiment_id"])
    done.write_text(json.dumps({"total": total, "experiment_id": experiment}))
    return experiment


def main(quick: bool = False, store: Path | None = None) -> list[Measurement]:
    """Build (or reuse) the store, serve it, time the API stages; print and return them."""
    from dashboard_helpers import Server

    genes, values, replicates = (100, 50, 3) if quick else (2000, 50, 3)
    total = genes * values * replicates
    tmp = Path(tempfile.mkdtemp(prefix="metalab-ui-bench-"))
    rows: list[Measurement] = []
    try:
        big = store if store is not None else tmp / "big"
        experiment = _build(big, tmp, total, values, replicates)
        with Server(big, refresh_s=3.0) as server:
            took, first = _get(server.base, "/api/runs", experiment=experiment, limit=50)
            assert first["total"] == total, first["total"]
            rows.append(
                Measurement(
                    "(0) first load of the run table",
                    total,
                    [took],
                    peak_rss_mb(),
                    target="once per experiment",
                )
            )
            rows.append(
                _stage(
                    server.base,
                    "(1) first runs-table page (50 rows)",
                    total,
                    "<= 0.3 s",
                    "/api/runs",
                    experiment=experiment,
                    limit=50,
                )
            )
            rows.append(
                _stage(
                    server.base,
                    "(2) filtered + sorted page",
                    total,
                    "<= 0.5 s",
                    "/api/runs",
                    experiment=experiment,
                    where=["expr_val>=25", "gene<1500"],
                    sort="loss",
                    order="desc",
                    offset=100,
                    limit=50,
                )
            )
            rows.append(
                _stage(
                    server.base,
                    f"(3) plot data {genes} x {values}, sd over replicates",
                    total,
                    "<= 1 s",
                    "/api/plot",
                    experiment=experiment,
                    x="expr_val",
                    y="score",
                    hue="gene",
                    errorbar="sd",
                )
            )
            assert rows[-1].extra["points"] == genes * values
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for row in rows:
        row.extra["median_ms"] = round(1000 * statistics.median(row.seconds), 1)
    print_table(f"dashboard API benchmark: {total} runs, FileStore, over HTTP", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--store", type=Path, help="build the store here and keep it")
    args = parser.parse_args()
    main(args.quick, args.store)
