"""Stage 4 of ``bench_large_sweep``: what a user does with a finished sweep's store.

``reconnect`` + ``.status``; a resubmission with nothing to do, two ways: after a change
(the store's done proof is removed before each, so each scans every marker, as the first
one after the sweep or one after a deleted marker does, and keeps the proof) and
answered by the proof; ``reconnect`` after them; ``load_results`` + ``to_dataframe()``.
Each resubmission row carries its CPU time and where its time went (the same steps timed
on their own, outside the call).
"""

from __future__ import annotations

import contextlib
import io
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import metalab
from _common import Measurement, measure
from metalab.keys import done_proof_key
from metalab.plan import RunPlan
from metalab.store.done_proof import DoneProof
from metalab.store.file import FileStore

REPEATS = 5


def _cpu() -> float:
    # RUSAGE_SELF counts every thread (the Rust scan runs on two).
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(
    stage: str, size: int, fn: Callable[[], Any], target: str, repeats: int = REPEATS,
    setup: Callable[[], Any] | None = None,
) -> Measurement:  # fmt: skip
    """Median wall and CPU time of ``repeats`` calls (``setup`` before each, untimed)."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        cpu, start = _cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu)
    extra = {"cpu_median_s": statistics.median(cpus), "loadavg": _load()}
    return Measurement(stage, size, walls, 0.0, target=target, extra=extra)


def breakdown(exp: metalab.Experiment, store: FileStore, proven: bool) -> dict[str, float]:
    """Wall seconds of a resubmission's steps, each timed on its own: the plan and its
    run-set key, the proof check, and when the proof does not hold the run IDs and the
    marker scan; the manifests read for staleness."""
    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        steps[name] = time.perf_counter() - start
        return out

    plan = step("plan + run_set_key", lambda: _keyed(RunPlan(exp)))
    proof = DoneProof(store, exp.experiment_id, plan.run_set_key)
    holds = step("done proof check (a stat per shard dir)", proof.holds)
    if holds != proven:
        raise AssertionError(f"done proof holds={holds}, expected {proven}")
    if not proven:
        ids = step("run IDs (plan_run_ids)", lambda: plan.run_ids)
        step("marker scan (states)", lambda: store.states(ids))
    manifests = step("manifests read", lambda: store.list_manifests(exp.experiment_id))
    steps["manifests"] = float(len(manifests))
    return steps


def _keyed(plan: RunPlan) -> RunPlan:
    assert plan.run_set_key
    return plan


def finished_store_rows(
    exp: metalab.Experiment, store: Path, config: metalab.SlurmConfig
) -> list[Measurement]:
    """Stage 4 on ``store``, where every run of ``exp`` is done (see the module docstring)."""
    n_runs = exp.total_runs
    fs = FileStore(store)
    rows: list[Measurement] = []

    def reconnect_status() -> None:
        status = metalab.reconnect(str(store)).status
        if status.completed != n_runs:
            raise AssertionError(f"reconnect status {status}, expected {n_runs} completed")

    def resubmit() -> None:
        with contextlib.redirect_stderr(io.StringIO()):
            handle = metalab.run(
                exp, store=str(store), resume=True, executor=metalab.SlurmExecutor(config)
            )
        if handle.job_ids:
            handle.cancel()
            raise AssertionError(f"resubmission of a finished sweep submitted {handle.job_ids}")

    def forget_proof() -> None:
        fs.layout.blob(done_proof_key(exp.experiment_id)).unlink(missing_ok=True)

    def load() -> None:
        frame = metalab.load_results(str(store)).to_dataframe()
        if len(frame) != n_runs:
            raise AssertionError(f"to_dataframe has {len(frame)} rows, expected {n_runs}")

    rows.append(timed("reconnect + status", n_runs, reconnect_status, "<= 1 s"))
    # Each scans every marker (as the first after the sweep, or after any change).
    changed = timed("resubmission after a change (scans)", n_runs, resubmit, "keeps the proof",
                    setup=forget_proof)  # fmt: skip
    forget_proof()
    changed.extra["steps"] = breakdown(exp, fs, proven=False)
    rows.append(changed)
    resubmit()  # keeps the proof again, as any scan that finds every run done
    proven = timed("resubmission, nothing to do", n_runs, resubmit, "<= 0.5 s")
    proven.extra["steps"] = breakdown(exp, fs, proven=True)
    rows.append(proven)
    # Reconnect again after the empty resubmission (issue 13: it used to raise StoreError).
    rows.append(timed("reconnect + status after it", n_runs, reconnect_status, "<= 1 s"))
    rows.append(measure("load_results + to_dataframe()", n_runs, load, trace_memory=False))
    return rows


def print_details(rows: list[Measurement]) -> None:
    """The CPU time, load and step breakdown of the rows :func:`timed` made."""
    for row in rows:
        x = row.extra
        if "cpu_median_s" not in x:
            continue
        print(
            f"  {row.stage}: wall median {row.median:.3f} s of "
            f"{', '.join(f'{s:.3f}' for s in row.seconds)}; CPU median "
            f"{x['cpu_median_s']:.3f} s; load {x['loadavg']}"
        )
        steps = x.get("steps", {})
        if steps:
            manifests = int(steps.pop("manifests", 0))
            said = "; ".join(f"{name} {s:.3f}" for name, s in steps.items())
            print(f"    steps (s): {said} ({manifests} manifests)")
