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
    and sd over 3 replicates (``metalab.plot_data.aggregate``)            target <= 1 s
(4) the in-memory part of an incremental refresh (``metalab.ui.refresh``): find the
    1,000 runs that finished since the table was loaded and merge them in (reading
    their records comes on top: 1,000 ``load_records``).

Run: ``uv run python benches/bench_ui.py [--quick] [--store DIR]`` (``--quick``: 100 x 50
x 3 runs; ``--store``: keep the generated store there and reuse it next time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ui"))

import metalab
from _common import Measurement, peak_rss_mb, print_table
from bench_scale import _experiment, _three_metrics, generate_store
from metalab.store.file import FileStore

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
        if not (big / "index").exists():
            # A store kept from before the results index existed: a store metalab wrote
            # has segments, so the dashboard's first load is timed through them.
            FileStore(big).reindex()
        return str(json.loads(done.read_text())["experiment_id"])
    shutil.rmtree(big, ignore_errors=True)
    template, template_store = _template(tmp)
    generate_store(big, template, total, values, replicates)
    shutil.copytree(template_store / "experiments", big / "experiments")
    # The cloned records were written around metalab, without the index segments its
    # writers append (see bench_scale stage 6): build them as `metalab store reindex` does.
    FileStore(big).reindex()
    experiment = str(template["experiment_id"])
    done.write_text(json.dumps({"total": total, "experiment_id": experiment}))
    return experiment


def _stages(store: Any, experiment: str, kind: str, genes: int, values: int) -> list[Measurement]:
    """Serve ``store`` and time stages (0)-(3) of the module docstring against it."""
    from dashboard_helpers import Server

    total = genes * values * 3
    rows: list[Measurement] = []
    with Server(store, refresh_s=3.0) as server:
        base = server.base
        took, first = _get(base, "/api/runs", experiment=experiment, limit=50)
        assert first["total"] == total, first["total"]
        rows.append(
            Measurement(
                f"{kind} (0) first load of the run table",
                total,
                [took],
                peak_rss_mb(),
                target="once per experiment",
            )
        )
        rows.append(
            _stage(
                base,
                f"{kind} (1) first runs-table page (50 rows)",
                total,
                "<= 0.3 s",
                "/api/runs",
                experiment=experiment,
                limit=50,
            )
        )
        rows.append(
            _stage(
                base,
                f"{kind} (2) filtered + sorted page",
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
                base,
                f"{kind} (3) plot data {genes} x {values}, sd of 3",
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
        rows.append(_merge_stage(server, experiment, kind, total))
    return rows


def _merge_stage(server: Any, experiment: str, kind: str, total: int) -> Measurement:
    """(4) the in-memory part of an incremental refresh: 1,000 runs finished since."""
    from metalab.records import StoredState
    from metalab.ui.refresh import changed_runs, merge

    frame = server.data.snapshot(experiment).frame
    order = frame["run_id"].tolist()
    fresh = frame.iloc[::300].copy()  # 1,000 rows at 300,000: the runs that "finished"
    older = frame.drop(fresh.index)
    states = [StoredState.DONE] * len(order)
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        changed = changed_runs(older, order, states)
        merged = merge(older, fresh, order)
        seconds.append(time.perf_counter() - start)
    assert len(changed) == len(fresh) and merged["run_id"].tolist() == order
    return Measurement(
        f"{kind} (4) refresh: find + merge {len(fresh)} new runs",
        total,
        seconds,
        peak_rss_mb(),
        target="<< a full load",
    )


def _postgres_rows(big: Path, experiment: str, genes: int, values: int) -> list[Measurement]:
    """The same stages on PostgreSQL: ``big`` imported into a throw-away schema."""
    from metalab.store import import_from_filestore
    from metalab.store.postgres import PostgresStore

    url = os.environ["METALAB_TEST_POSTGRES_URL"]
    sep = "&" if "?" in url else "?"
    locator = f"{url}{sep}schema=bench_ui_{uuid.uuid4().hex[:12]}"
    start = time.perf_counter()
    import_from_filestore(str(big), locator)
    imported = time.perf_counter() - start
    try:
        rows = _stages(locator, experiment, "pg", genes, values)
        rows[0].extra["import_s"] = imported
        return rows
    finally:
        store = PostgresStore.from_locator(locator)
        try:
            store.drop_schema()
        finally:
            store.close()


def main(quick: bool = False, store: Path | None = None) -> list[Measurement]:
    """Build (or reuse) the store, time the API stages on it (and on PostgreSQL when
    ``METALAB_TEST_POSTGRES_URL`` is set); print and return them."""
    genes, values, replicates = (100, 50, 3) if quick else (2000, 50, 3)
    total = genes * values * replicates
    tmp = Path(tempfile.mkdtemp(prefix="metalab-ui-bench-"))
    rows: list[Measurement] = []
    try:
        big = store if store is not None else tmp / "big"
        experiment = _build(big, tmp, total, values, replicates)
        rows += _stages(big, experiment, "file", genes, values)
        if os.environ.get("METALAB_TEST_POSTGRES_URL"):
            rows += _postgres_rows(big, experiment, genes, values)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for row in rows:
        row.extra["median_ms"] = round(1000 * statistics.median(row.seconds), 1)
    print_table(f"dashboard API benchmark: {total} runs, over HTTP", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--store", type=Path, help="build the store here and keep it")
    args = parser.parse_args()
    main(args.quick, args.store)
