"""Planning a 300,000-run experiment: params, run IDs, seed roots and the .done scan.

Grid of 2000 x 50 values x 3 replicates. Targets on the 2-core reference machine:
(a)+(b)+(c) under 0.5 s and 200 MB; (d) within 2x of a bare ``os.scandir`` of the
same marker layout.

Run: ``uv run python benches/bench_plan.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import metalab
from _common import Measurement, measure, print_table
from metalab import _core
from metalab.params import GridSource, ParamSource
from metalab.plan import RunPlan
from metalab.store.layout import FileLayout


def _experiment(genes: int, values: int, replicates: int) -> metalab.Experiment:
    return metalab.Experiment(
        name="large_sweep",
        version="0.1",
        context={"atlas": "v1"},
        operation=lambda: None,
        params=metalab.grid(gene=list(range(genes)), expr_val=list(range(values))),
        seeds=metalab.seeds(base=42, replicates=replicates),
    )


def _write_markers(root: Path, run_ids: list[str]) -> None:
    for shard in {r[:2] for r in run_ids}:
        (root / shard).mkdir(parents=True, exist_ok=True)
    for run_id in run_ids:
        (root / run_id[:2] / f"{run_id}.done").touch()


def _scandir_floor(root: Path, run_ids: list[str]) -> list[bool]:
    present: set[str] = set()
    for shard in os.scandir(root):
        present.update(e.name[:-5] for e in os.scandir(shard.path))
    return [r in present for r in run_ids]


def _indexed_lookups(
    stage: str, source: ParamSource, target: str = "<= 1.5x list-index floor"
) -> list[Measurement]:
    """``source[i]`` for every point vs its floor: a list index plus a dict build."""
    count = len(source)
    every = list(source)
    keys = list(every[0])
    # The floor holds every point prebuilt, which ``source[i]`` never does (O(1) memory).
    points = [tuple(point.values()) for point in every]
    lookup = measure(
        stage,
        count,
        lambda: [source[i] for i in range(count)],
        target=target,
    )
    floor = measure(
        "    floor: list index + dict build",
        count,
        lambda: [dict(zip(keys, points[i], strict=True)) for i in range(count)],
    )
    lookup.floor_seconds = floor.median
    assert [source[i] for i in range(count)] == every
    return [lookup, floor]


def _other_sources(count: int) -> list[tuple[str, ParamSource, str]]:
    """A random search and a manual list of ``count`` points with three keys each."""
    space = {
        "lr": metalab.loguniform(1e-4, 1e-1),
        "width": metalab.choice([32, 64, 128]),
        "depth": metalab.randint(1, 8),
    }
    cases = [{"lr": 0.1 / (i + 1), "layers": [64, i % 7], "name": f"c{i}"} for i in range(count)]
    return [
        # Each trial hashes (seed, i, key) once per key: the floor does no such work.
        ("(i2) random(...)[i]", metalab.random(space, count, seed=1), "3 blake2 draws each"),
        ("(i3) manual(...)[i] (fresh copies)", metalab.manual(cases), "<= 1.5x list-index floor"),
    ]


def main(quick: bool = False) -> list[Measurement]:
    """Run the planning benchmarks and print their table."""
    genes, values, replicates = (200, 50, 3) if quick else (2000, 50, 3)
    exp = _experiment(genes, values, replicates)
    grid = exp.params
    assert isinstance(grid, GridSource)
    total = exp.total_runs
    rows: list[Measurement] = []

    rows.append(
        measure(
            "(a) decode all params (index rows)",
            total // replicates,
            lambda: grid.indices_range(0, len(grid)),
        )
    )
    rows.append(
        measure("(a') params fingerprints", total // replicates, lambda: exp.params.fingerprints())
    )
    rows += _indexed_lookups("(i1) grid(...)[i] for every point", grid)
    for stage, source, target in _other_sources(total // replicates // 5):
        rows += _indexed_lookups(stage, source, target)
    plan = RunPlan(exp)
    params_fps = exp.params.fingerprints()
    rows.append(
        measure(
            "(b) run IDs of all tasks",
            total,
            lambda: _core.plan_run_ids(
                plan.experiment_id, plan.context_fp, params_fps, plan.seed_fps
            ),
        )
    )
    rows.append(
        measure(
            "(c) seed roots of all replicates",
            replicates,
            lambda: [_core.seed_root(42, r) for r in range(replicates)],
        )
    )

    def whole_plan() -> None:
        RunPlan(exp).run_ids  # noqa: B018 - computes and caches the plan

    combined = measure(
        "(a+b+c) whole plan via RunPlan", total, whole_plan, target="< 0.5 s, < 200 MB"
    )
    rows.append(combined)

    tmp = Path(tempfile.mkdtemp(prefix="metalab-bench-"))
    try:
        run_ids = plan.run_ids
        _write_markers(tmp / "done", run_ids[::2])
        scan = measure(
            "(d) scan .done markers, half present",
            total,
            lambda: _core.scan_done(FileLayout(tmp).scan, run_ids),
            target="<= 2x scandir floor",
        )
        floor = measure(
            "    floor: bare os.scandir + set lookup",
            total,
            lambda: _scandir_floor(tmp / "done", run_ids),
        )
        scan.floor_seconds = floor.median
        rows += [scan, floor]
        assert sum(_core.scan_done(FileLayout(tmp).scan, run_ids)) == (total + 1) // 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        f"plan benchmark: {genes} x {values} grid x {replicates} replicates = {total} runs", rows
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    main(parser.parse_args().quick)
