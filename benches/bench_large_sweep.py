"""Benchmark: the spec's ``large_sweep`` executed to completion on a site-like SLURM cluster.

1. **as written**: the spec block with its ``SlurmConfig`` exactly as in SPEC.md (one run
   per array task), timed from ``metalab.run`` to ``handle.result()``; every run must
   succeed and the store must hold exactly N records.
2. **its floor**: as many ``/bin/true`` array tasks with metalab's ``#SBATCH`` lines, laid
   out alike (array sizes, ``%throttle``, ``--dependency`` lanes from metalab's own shard
   planner) and released in waves of the same size under the same QOS limit (the next
   wave once the last left ``squeue``, polled every :data:`FLOOR_POLL_S`). Target <= 1.25x.
3. **auto**: the same with ``runs_per_task="auto"``, a fresh store, and its own floor.
   Target <= 5 minutes at 300,000 runs.
4. On the auto store: ``reconnect`` + ``.status`` (<= 1 s), a resubmission that submits
   nothing (<= 0.5 s), ``load_results`` + ``to_dataframe()``.

Each sweep also prints where its time went, from ``sacct``: the tasks' CPU, the wave jobs',
and the time no task ran. Needs the site profile (``SLURM_CONF=/etc/slurm-site/slurm.conf``);
partition ``cpu`` is created when missing and deleted afterwards, as the spec-block tests
do. Everything submitted is scancel-ed on any exit; stores are removed.

One run per array task makes the as-written stage one task per run; this cluster releases
about 15 trivial tasks per second, so 300,000 tasks take hours. ``--written-runs`` scales
that stage alone (the config stays untouched)::

    uv run python benches/bench_large_sweep.py --quick     # 15,000 runs (600 as written)
    uv run python benches/bench_large_sweep.py              # 300,000 runs (3,000 as written)
    uv run python benches/bench_large_sweep.py --written-runs 300000   # the whole thing
    uv run python benches/bench_large_sweep.py --finished-store DIR     # stage 4 alone, on
        # a store where stage 3 (or the spec block) finished every run (--runs: how many)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import metalab
from _common import Measurement, peak_rss_mb, print_table
from _finished_store import finished_store_rows, print_details
from metalab.executors.slurm_script import job_name, plan_shards, render_script, sbatch_options
from metalab.plan import RunPlan

RUNS_PER_GENE = 150  # 50 expression values x 3 replicates, as in the spec block
FLOOR_POLL_S = 0.25
"""squeue interval of the floor's driver (tighter than metalab's poll: a strict floor)."""
FLOOR_NAME = "metalab-bench-floor"
SACCT_WAIT_S = 30.0
PARTITION = "cpu"
my_context: dict[str, int] = {}  # the spec block's names


def my_operation(params: Any, seeds: Any, capture: Any) -> None:
    """The spec's stand-in operation (the one tests/slurm/test_slurm_spec_blocks.py uses)."""
    capture.metric("value", sum(v for v in params.values() if isinstance(v, int)))


def spec_config(**overrides: Any) -> metalab.SlurmConfig:
    """The spec block's SlurmConfig exactly as written (plus ``overrides``, for auto)."""
    return metalab.SlurmConfig(
        partition="cpu",
        time="1:00:00",
        max_array_size=10000,  # Auto-shard into chunks of 10k
        max_concurrent=500,  # Run up to 500 tasks at once
        **overrides,
    )


def spec_experiment(n_runs: int) -> metalab.Experiment:
    """The spec's ``large_sweep`` experiment with ``n_runs`` runs (a multiple of 150)."""
    return metalab.Experiment(
        name="large_sweep",
        version="0.1",
        context=my_context,
        operation=my_operation,
        params=metalab.grid(
            gene=list(range(n_runs // RUNS_PER_GENE)),  # 2000 genes at full size
            expr_val=list(range(50)),  # 50 expression values
        ),
        seeds=metalab.seeds(base=42, replicates=3),  # 3 replicates
    )


def _sh(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Jobs:
    """What this benchmark submitted, so that every exit can cancel it."""

    ids: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    handles: list[metalab.RunHandle] = field(default_factory=list)

    def cancel(self) -> None:
        """Cancel the metalab submissions (their wave jobs too) and anything left by name."""
        for handle in self.handles:
            with contextlib.suppress(Exception):
                handle.cancel()
        if self.ids:
            _sh(["scancel", *self.ids])
        # A wave job running right now may still submit its next wave (it takes it back
        # once it sees the cancellation): sweep by name until nothing of ours is queued.
        for _ in range(15):
            out = _sh(["squeue", "--me", "-h", "-o", "%F %j"]).stdout
            rows = [line.split() for line in out.splitlines()]
            left = sorted({r[0] for r in rows if len(r) == 2 and r[1] in self.names})
            if not left:
                return
            _sh(["scancel", *left])
            time.sleep(1.0)


@contextlib.contextmanager
def cpu_partition() -> Iterator[None]:
    """Partition ``cpu`` on every node, created for the benchmark when missing."""
    created = PARTITION not in _sh(["sinfo", "-h", "-o", "%R"]).stdout.split()
    if created:
        create = f"PartitionName={PARTITION} Nodes=ALL State=UP MaxTime=INFINITE"
        done = _sh(["scontrol", "create", *create.split()])
        if done.returncode != 0:
            raise RuntimeError(f"cannot create partition {PARTITION}: {done.stderr.strip()}")
    try:
        yield
    finally:
        # Cancelled arrays keep the partition "in use" for 30-40 s (seen after a SIGTERM).
        for _ in range(90 if created else 0):
            if _sh(["scontrol", "delete", f"PartitionName={PARTITION}"]).returncode == 0:
                break
            time.sleep(1.0)


@dataclass(frozen=True)
class LayoutInfo:
    """What the dry run said: tasks, runs per task, array size, waves and wave size."""

    n_tasks: int
    runs_per_task: int
    array_size: int
    waves: int
    wave_tasks: int


_LAYOUT = re.compile(r"layout: (\d+) array task\(s\) of (\d+) run\(s\), arrays of at most (\d+)")
_WAVES = re.compile(r"waves: (\d+) of at most (\d+) task\(s\)")


def dry_run_layout(exp: metalab.Experiment, store: Path, config: metalab.SlurmConfig) -> LayoutInfo:
    """The layout the dry run reports (the limits and queue as they are now)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metalab.run(exp, store=str(store), executor=metalab.SlurmExecutor(config), dry_run=True)
    text = out.getvalue()
    match = _LAYOUT.search(text)
    if match is None:
        raise RuntimeError(f"dry run printed no layout line:\n{text[:2000]}")
    n_tasks, k, size = (int(g) for g in match.groups())
    waves = _WAVES.search(text)
    n_waves, wave_tasks = (int(waves.group(1)), int(waves.group(2))) if waves else (1, n_tasks)
    return LayoutInfo(n_tasks, k, size, n_waves, wave_tasks)


def submitted_layout(handle: metalab.RunHandle, planned: LayoutInfo, n_runs: int) -> LayoutInfo:
    """The first wave as submitted (the user's other jobs may have changed the headroom
    since the dry run); later waves are laid out alike by their wave jobs."""
    shards = getattr(getattr(handle, "_launch", None), "shards", None)
    if not shards:
        return planned
    k = int(handle._launch.runs_per_task)  # type: ignore[union-attr]
    first, n_tasks = sum(c for _j, _o, c in shards), -(-n_runs // k)
    waves = 1 if first >= n_tasks else 1 + -(-(n_tasks - first) // first)
    size = planned.array_size if waves == 1 else max(c for _j, _o, c in shards)
    return replace(planned, n_tasks=n_tasks, runs_per_task=k, waves=waves, wave_tasks=first,
                   array_size=size)  # fmt: skip


def floor_run(
    layout: LayoutInfo, config: metalab.SlurmConfig, jobs: Jobs
) -> tuple[float, list[str]]:
    """Wall time of ``layout``'s array tasks as ``/bin/true``, released wave by wave,
    and the job ids of its arrays.

    The ``#SBATCH`` lines are metalab's own (same partition, time, memory, signal,
    requeue), so the same number of tasks run at once; only the body differs.
    """
    name = f"{FLOOR_NAME}-{os.getpid()}"
    jobs.names.add(name)
    cfg = replace(config, runs_per_task=layout.runs_per_task, max_array_size=layout.array_size)
    header = render_script(
        cfg, python=sys.executable, store_locator="unused", experiment_id="unused",
        offset=0, tasks_key=None, job_name=name,
    )  # fmt: skip
    script = "\n".join(ln for ln in header.splitlines() if ln.startswith("#")) + "\n/bin/true\n"
    start = time.perf_counter()
    remaining = layout.n_tasks
    submitted: list[str] = []
    while remaining > 0:
        wave = min(remaining, layout.wave_tasks)
        ids: list[str] = []
        for shard in plan_shards(wave, cfg):
            after = ids[shard.after] if shard.after is not None else None
            argv = ["sbatch", *sbatch_options(shard, "/dev/null", after)]
            while True:
                done = _sh(argv, stdin=script)
                if done.returncode == 0:
                    break
                if "MaxSubmitJob" not in done.stderr and "QOS" not in done.stderr:
                    raise RuntimeError(f"floor sbatch failed: {done.stderr.strip()}")
                time.sleep(FLOOR_POLL_S)  # another user's jobs fill the limit: wait, as metalab
            ids.append(done.stdout.strip().split(";")[0])
        jobs.ids += ids
        submitted += ids
        remaining -= wave
        while _sh(["squeue", "--me", "-h", f"--name={name}", "-o", "%i"]).stdout.strip():
            time.sleep(FLOOR_POLL_S)
    return time.perf_counter() - start, submitted


def _clock_s(text: str) -> float:
    """sacct's ``TotalCPU`` (``MM:SS.mmm``, ``HH:MM:SS``, ``D-HH:MM:SS``) in seconds."""
    days, _, rest = text.rpartition("-")
    seconds = 0.0
    for part in rest.split(":"):
        seconds = seconds * 60 + float(part or 0)
    return seconds + 86400 * int(days or 0)


def _epoch(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None  # "Unknown", "None": never started


def accounting(job_ids: list[str], n_tasks: int) -> dict[str, float]:
    """Where a sweep's time went, from ``sacct`` (accounting must answer; else ``{}``).

    ``task_cpu_s`` sums the array tasks' user+sys CPU (cgroup accounting), ``wave_cpu_s``
    the wave jobs'; ``idle_s`` is the time within the sweep when none of its array tasks
    ran (wave releases), at sacct's one-second resolution. Asked again for up to
    :data:`SACCT_WAIT_S` until slurmdbd lists all ``n_tasks`` array tasks (it records them
    a moment after they end).
    """
    if not job_ids:
        return {}
    fmt = "--format=JobID,JobName,Start,End,TotalCPU"
    deadline = time.monotonic() + SACCT_WAIT_S
    while True:
        out = _sh(["sacct", "-n", "-P", "-j", ",".join(job_ids), fmt]).stdout
        # Steps (.batch) repeat their allocation's figures: allocations only.
        rows = [c for c in (ln.split("|") for ln in out.splitlines()) if len(c) == 5]
        rows = [c for c in rows if "." not in c[0]]
        accounted = sum(not c[1].endswith("-wave") for c in rows)
        if accounted >= n_tasks or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    task_cpu: list[float] = []
    wave_cpu: list[float] = []
    spans: list[tuple[float, float]] = []
    for cells in rows:
        begin, end = _epoch(cells[2]), _epoch(cells[3])
        if cells[1].endswith("-wave"):
            wave_cpu.append(_clock_s(cells[4]))
        else:
            task_cpu.append(_clock_s(cells[4]))
            if begin is not None and end is not None:
                spans.append((begin, end + 1.0))  # whole seconds: a 0 s task held its second
    if not spans:
        return {}
    spans.sort()
    covered, reach = 0.0, spans[0][0]
    for begin, end in spans:
        if end > reach:
            covered += end - max(begin, reach)
            reach = end
    total = reach - spans[0][0]
    return {
        "tasks_accounted": float(len(task_cpu)),
        "task_cpu_s": sum(task_cpu),
        "task_cpu_median_s": statistics.median(task_cpu),
        "wave_jobs": float(len(wave_cpu)),
        "wave_cpu_s": sum(wave_cpu),
        "first_start_to_last_end_s": total,
        "idle_s": total - covered,
    }


@dataclass
class SweepResult:
    """One executed sweep: its wall time, layout and the driver's own CPU time."""

    seconds: float
    layout: LayoutInfo
    job_ids: list[str]
    driver_cpu_s: float


def run_sweep(n_runs: int, store: Path, config: metalab.SlurmConfig, jobs: Jobs) -> SweepResult:
    """Execute the spec block into ``store`` and check the counts exactly."""
    exp = spec_experiment(n_runs)
    layout = dry_run_layout(exp, store, config)
    name = job_name(exp.name, RunPlan(exp).run_ids)
    jobs.names |= {name, f"{name}-wave", f"{name}-retry"}
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    start = time.perf_counter()
    # --- spec block (store under a temp dir, grid scaled by n_runs) ---
    handle = metalab.run(
        exp,
        store=str(store),
        executor=metalab.SlurmExecutor(config),
    )
    jobs.handles.append(handle)
    layout = submitted_layout(handle, layout, n_runs)
    results = handle.result()
    # --- end ---
    seconds = time.perf_counter() - start
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0
    ok = sum(1 for r in results if r.status.value == "success")
    if len(results) != n_runs or ok != n_runs:
        # The whole error of the first failure: the store (and its logs) is removed on exit.
        failed = [r for r in results if r.status.value != "success"][:1]
        said = f"; first failure: {getattr(failed[0].error, 'message', '?')}" if failed else ""
        raise AssertionError(f"{n_runs} runs expected successful; got {ok} of {len(results)}{said}")
    records = sum(1 for _ in (store / "runs").rglob("*.json"))
    loaded = metalab.load_results(str(store))
    if records != n_runs or len(loaded) != n_runs or len({r.run_id for r in loaded}) != n_runs:
        raise AssertionError(
            f"store holds {records} record files, {len(loaded)} loaded runs; expected {n_runs}"
        )
    return SweepResult(seconds, layout, list(handle.job_ids), cpu)


def _sweep_rows(
    label: str, n_runs: int, result: SweepResult, floor_ids: tuple[float, list[str]], target: str
) -> list[Measurement]:
    lay = result.layout
    floor, ids = floor_ids
    ratio = result.seconds / floor if floor > 0 else float("nan")
    extra: dict[str, Any] = {
        "array_tasks": lay.n_tasks,
        "runs_per_task": lay.runs_per_task,
        "array_size": lay.array_size,
        "waves": lay.waves,
        "wave_tasks": lay.wave_tasks,
        "runs_per_s": n_runs / result.seconds,
        "ratio_to_floor": ratio,
        "driver_cpu_s": result.driver_cpu_s,
        "loadavg_after": _load(),
        "sacct": accounting(result.job_ids, lay.n_tasks),
    }
    row = Measurement(
        f"{label}: run -> result()", n_runs, [result.seconds], peak_rss_mb(),
        floor_seconds=floor, target=f"{target}; {ratio:.2f}x floor", extra=extra,
    )  # fmt: skip
    floor_row = Measurement(
        f"{label}: floor, {lay.n_tasks} x /bin/true", lay.n_tasks, [floor], 0.0,
        target=f"{lay.waves} wave(s) of <= {lay.wave_tasks}, arrays <= {lay.array_size}",
        extra={"sacct": accounting(ids, lay.n_tasks)},
    )  # fmt: skip
    return [row, floor_row]


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _timed_stage(label: str, fn: Callable[[], Any]) -> Any:
    print(f"[bench_large_sweep] {label} (load {_load()})", flush=True)
    return fn()


def main(
    quick: bool = False, runs: int | None = None, written_runs: int | None = None
) -> list[Measurement]:
    """Run the stages, print the table and return its rows (see the module docstring)."""
    # CI runs --quick before the tests: kept to a few minutes of the 2-core cluster.
    n_runs = runs or (15_000 if quick else 300_000)
    n_written = written_runs or (600 if quick else 3_000)
    for n in (n_runs, n_written):
        if n <= 0 or n % RUNS_PER_GENE:
            raise ValueError(f"run counts must be positive multiples of {RUNS_PER_GENE}, got {n}")
    if not shutil.which("sbatch"):
        raise RuntimeError("sbatch not found: this benchmark needs a SLURM cluster")
    base = Path("/scratch") if os.access("/scratch", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="metalab-bench-large-sweep-", dir=base))
    jobs = Jobs()
    rows: list[Measurement] = []
    load_before = _load()
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the finally below cancels and cleans.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with cpu_partition():
            written = spec_config()
            result = _timed_stage(
                f"1. as written, {n_written:,} runs",
                lambda: run_sweep(n_written, root / "written", written, jobs),
            )
            floor = _timed_stage("2. its floor", lambda: floor_run(result.layout, written, jobs))
            rows += _sweep_rows("as written", n_written, result, floor, "<= 1.25x floor")
            shutil.rmtree(root / "written", ignore_errors=True)

            auto = spec_config(runs_per_task="auto")
            result = _timed_stage(
                f"3. runs_per_task='auto', {n_runs:,} runs",
                lambda: run_sweep(n_runs, root / "auto", auto, jobs),
            )
            floor = _timed_stage("3. its floor", lambda: floor_run(result.layout, auto, jobs))
            target = "<= 300 s at 300,000" if n_runs >= 300_000 else "(<= 300 s at 300,000)"
            rows += _sweep_rows("auto", n_runs, result, floor, target)
            exp = spec_experiment(n_runs)
            rows += _timed_stage(
                "4. finished store", lambda: finished_store_rows(exp, root / "auto", auto)
            )
    finally:
        jobs.cancel()
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    conf = os.environ.get("SLURM_CONF", "")
    title = f"large_sweep (SLURM_CONF={conf}); load average before {load_before}, after "
    print_table(title + _load(), rows)
    print_details(rows)
    for row in rows:
        x = row.extra
        if "array_tasks" in x:
            print(
                f"  {row.stage}: {x['array_tasks']} tasks of {x['runs_per_task']} run(s), "
                f"arrays <= {x['array_size']}, {x['waves']} wave(s) of <= {x['wave_tasks']}, "
                f"{x['runs_per_s']:.0f} runs/s, {x['ratio_to_floor']:.2f}x floor, driver CPU "
                f"{x['driver_cpu_s']:.1f} s, load after {x['loadavg_after']}"
            )
        if x.get("sacct"):
            a = x["sacct"]
            print(
                f"  {row.stage} (sacct): {a['tasks_accounted']:.0f} tasks, CPU "
                f"{a['task_cpu_s']:.1f} s (median {a['task_cpu_median_s']:.3f} s/task); "
                f"{a['wave_jobs']:.0f} wave job(s), CPU {a['wave_cpu_s']:.1f} s; first start "
                f"to last end {a['first_start_to_last_end_s']:.0f} s, no task running in it "
                f"{a['idle_s']:.0f} s; outside it {row.median - a['first_start_to_last_end_s']:.0f}"
                " s (submission, first start, last poll)"
            )
    return rows


if __name__ == "__main__":
    doc = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=doc)
    parser.add_argument("--quick", action="store_true", help="15,000 runs instead of 300,000")
    parser.add_argument("--runs", type=int, default=None, help="runs of the auto sweep")
    parser.add_argument("--written-runs", type=int, default=None,
                        help="as-written sweep runs; default 3,000 (--quick: 600)")  # fmt: skip
    parser.add_argument("--finished-store", type=Path, default=None,
                        help="only stage 4, on this finished auto store")  # fmt: skip
    args = parser.parse_args()
    if args.finished_store is not None:
        exp = spec_experiment(args.runs or 300_000)
        stage4 = finished_store_rows(exp, args.finished_store, spec_config(runs_per_task="auto"))
        print_table(f"large_sweep stage 4 on {args.finished_store}", stage4)
        print_details(stage4)
    else:
        main(quick=args.quick, runs=args.runs, written_runs=args.written_runs)
