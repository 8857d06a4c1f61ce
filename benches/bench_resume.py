"""Resume benchmark: what ``metalab.run`` does before launching, at 300,000 runs.

A FileStore holds 150,000 finished runs (done markers and record files) and the manifest
of the launch that produced them. Stages time ``metalab.run(exp, dry_run=True)`` (plan,
done scan, stale-run detection from manifests, todo list) when:

(1) the operation is unchanged (the common case: nothing stale, nothing decoded);
(2) the operation's code changed: 150,000 stale runs are found from the manifest alone;
(3) the code changed and the grid grew (task indices shift): the old launch is mapped
    through its run IDs, rebuilt from its manifest.

Run: ``uv run python benches/bench_resume.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import metalab
from _common import Measurement, measure, print_table
from bench_scale import _touch_markers
from metalab.plan import RunPlan
from metalab.runner import _manifest
from metalab.staleness import encode_tasks
from metalab.store.file import FileStore


@metalab.operation
def _before(params: dict[str, Any]) -> None:
    pass


@metalab.operation
def _after(params: dict[str, Any]) -> None:
    return None


def _experiment(genes: int, values: int, operation: Any) -> metalab.Experiment:
    return metalab.Experiment(
        name="resume",
        version="0.1",
        context={"atlas": "v1"},
        operation=operation,
        params=metalab.grid(gene=list(range(genes)), expr_val=list(range(values))),
        seeds=metalab.seeds(base=42, replicates=3),
    )


def _dry_run(exp: metalab.Experiment, root: Path) -> tuple[metalab.RunHandle, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        handle = metalab.run(exp, store=str(root), dry_run=True)
    return handle, err.getvalue()


def main(quick: bool = False) -> list[Measurement]:
    """Run the resume benchmarks and print their table."""
    genes, values = (100, 50) if quick else (2000, 50)
    old = _experiment(genes, values, _before)
    total = old.total_runs
    tmp = Path(tempfile.mkdtemp(prefix="metalab-resume-"))
    rows: list[Measurement] = []
    try:
        store = FileStore(tmp / "store")
        plan = RunPlan(old)
        done = plan.run_ids[::2]
        _touch_markers(store.layout.done_dir, done, ".done")
        _touch_markers(store.layout.runs_dir, done, ".json")
        # The launch that ran them: every task launched, with the old code.
        manifest = _manifest(plan, store, metalab.ThreadExecutor(), total)
        manifest["launched_tasks"] = encode_tasks((1 << total) - 1, total)
        store.put_manifest(old.experiment_id, manifest)
        half = len(done)
        stages = [
            ("(1) resume, code unchanged", old, "nothing stale; <= 0.5 s"),
            (
                "(2) resume, code changed",
                _experiment(genes, values, _after),
                "all stale; <= 0.5 s",
            ),
            (
                "(3) resume, code changed + grid grew",
                _experiment(genes + 1, values, _after),
                "old plan rebuilt and remapped; <= 1 s",
            ),
        ]
        for stage, exp, target in stages:
            handle, err = _dry_run(exp, store.root)
            assert handle.status.skipped == half, stage
            assert (f"{half} of {half} finished runs" in err) == (exp is not old), err
            rows.append(
                measure(
                    stage,
                    exp.total_runs,
                    lambda exp=exp: _dry_run(exp, store.root),
                    target=target,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(f"resume benchmark: metalab.run(dry_run=True), {total} runs, half done", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    main(parser.parse_args().quick)
