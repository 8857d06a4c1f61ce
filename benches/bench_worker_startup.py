"""Worker start-up benchmark: what one SLURM array task pays before its first run.

A SLURM array task is one ``python -m metalab.worker --store ... --experiment ...``
process: interpreter start, imports, store open, spec check and plan rebuild, the done
scan of its block, then its runs. At 30,000 tasks every 0.1 s of that is almost an hour
of slot time, so the target is at most 0.15 s from process start to the first run.

The store is prepared exactly as a SLURM submission leaves it (manifest and sealed spec
written by ``metalab.run`` itself, through an executor that submits nothing), for the
spec's ``large_sweep`` size: a 1000 x 300 grid, 300,000 runs. The operation lives in its
own module that imports metalab, as a user's script does. Each repeat starts a fresh
worker process for a different array task and takes the time from just before the
process is spawned to the moment the operation starts (it writes ``time.time()`` to a
file); the floor is ``python -c pass`` on the same interpreter.

Modules are imported from cached bytecode (the cache lives in a temporary
``PYTHONPYCACHEPREFIX``, warmed by one untimed task), as in a real array task: with
``PYTHONDONTWRITEBYTECODE=1`` in the environment SLURM hands to its tasks and an install
that shipped no ``.pyc`` (uv, editable installs), the batch script points
``PYTHONPYCACHEPREFIX`` at ``~/.cache/metalab/pycache`` (see
:data:`metalab.executors.slurm_script.BYTECODE_CACHE_LINES`). Without it every task
compiles every module it imports from source again: stage (w0) shows that cost.

(w0) as (w1), without bytecode cache (information, no target);
(w1) FileStore, the identity task list (a first submission);
(w2) FileStore, a ``--tasks`` blob of 150,000 runs (a resubmission of what was left);
(w3) the whole task: start-up plus 100 trivial runs, process start to exit;
(w4) as (w1) on PostgreSQL, when ``METALAB_TEST_POSTGRES_URL`` is set (information).

Run: ``uv run python benches/bench_worker_startup.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import metalab
from _common import Measurement, print_table
from metalab.executors.base import Executor, Job, Launch, TallyingLaunch
from metalab.executors.slurm_tasks import encode_task_list
from metalab.store.file import FileStore

TARGET_S = 0.15
_OPERATION = textwrap.dedent(
    """
    import os
    import time

    import metalab


    @metalab.operation
    def trivial(params, capture):
        stamp = os.environ.get("BENCH_STAMP")
        if stamp and not os.path.exists(stamp):
            with open(stamp, "w") as fh:
                fh.write(repr(time.time()))
        capture.metric("y", params["x"] + params["y"])
    """
)


class _SubmitOnly(Executor):
    """Ships the experiment like SlurmExecutor (manifest, sealed spec), runs nothing."""

    name = "slurm"
    ships_experiment = True

    def launch(self, job: Job) -> Launch:
        launch = TallyingLaunch(job)
        launch.mark_finished()
        return launch


def _experiment(root: Path) -> metalab.Experiment:
    """The 300,000-run sweep, its operation in a module of its own (as a user's script)."""
    ops = root / "ops"
    if not ops.is_dir():
        ops.mkdir()
        (ops / "bench_startup_ops.py").write_text(_OPERATION)
        sys.path.insert(0, str(ops))
    import bench_startup_ops  # type: ignore[import-not-found]

    return metalab.Experiment(
        name="startup",
        version="1",
        context={"atlas": "v1"},
        operation=bench_startup_ops.trivial,
        params=metalab.grid(x=list(range(1000)), y=list(range(300))),
        seeds=metalab.seeds(base=42, replicates=1),
    )


def _submit(exp: metalab.Experiment, store: Any) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        metalab.run(exp, store=store, executor=_SubmitOnly(), progress=False)


def _prepare(root: Path) -> tuple[str, str]:
    """A store holding the spec of a 300,000-run sweep; returns (store, experiment id)."""
    exp = _experiment(root)
    store = root / "store"
    _submit(exp, str(store))
    # A resubmission's task list: the odd half of the sweep.
    FileStore(store).put_blob("bench-startup-tasks", encode_task_list(range(1, 300_000, 2)))
    return str(store), exp.experiment_id


def _postgres_stage(root: Path, env: dict[str, str], repeats: int, floor: float) -> Measurement:
    """(w4) the same task against PostgreSQL (psycopg is imported: it is needed there)."""
    from metalab.store.postgres import PostgresStore

    url = os.environ["METALAB_TEST_POSTGRES_URL"]
    sep = "&" if "?" in url else "?"
    locator = f"{url}{sep}schema=bench_startup_{uuid.uuid4().hex[:12]}"
    store = PostgresStore.from_locator(locator)
    try:
        exp = _experiment(root)
        _submit(exp, store)
        stamp = root / "stamp"
        runs = [
            _start_to_first_run(_worker(locator, exp.experiment_id, 20 + i, 1), stamp, env)
            for i in range(repeats + 1)
        ][1:]  # the first one fills the bytecode cache of psycopg
        return _stage("(w4) start to first run, PostgreSQL", runs, 0, floor, 1, "")
    finally:
        store.drop_schema()
        store.close()


def _worker(store: str, experiment: str, task: int, per_task: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "metalab.worker",
        "--store",
        store,
        "--experiment",
        experiment,
        "--runs-per-task",
        str(per_task),
        "--array-task",
        str(task),
        *extra,
    ]


def _start_to_first_run(
    argv: list[str], stamp: Path, env: dict[str, str]
) -> tuple[float, float, float]:
    """Seconds from spawn to the first run's start, from spawn to exit, and CPU seconds.

    The CPU time (user + system of the worker process) is what the task costs whatever
    else the machine is doing; wall times on a busy 2-core box include waiting for a core.
    """
    stamp.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or not stamp.exists():
        raise RuntimeError(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(stamp.read_text()) - started, ended - started, cpu


def _floor(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _stage(
    stage: str,
    runs: list[tuple[float, float, float]],
    which: int,
    floor: float,
    size: int,
    target: str,
) -> Measurement:
    cpu = [r[2] for r in runs]
    return Measurement(
        stage=stage,
        size=size,
        seconds=[r[which] for r in runs],
        peak_mb=0.0,
        floor_seconds=floor,
        target=target,
        extra={"cpu_median_s": statistics.median(cpu), "cpu_min_s": min(cpu)},
    )


def main(quick: bool = False) -> list[Measurement]:
    """Time worker start-up for a few array tasks of each kind."""
    repeats = 5 if quick else 15
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="metalab-bench-startup-") as tmp:
        root = Path(tmp)
        store, experiment = _prepare(root)
        stamp = root / "stamp"
        env = {**os.environ, "BENCH_STAMP": str(stamp)}
        env.pop("PYTHONSAFEPATH", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        floor = _floor(repeats)
        target = f"<= {TARGET_S} s"
        # An empty cache prefix that is never written: no .pyc is read (not even the
        # __pycache__ next to the sources) and none is written, so each task compiles.
        (root / "no-pycache").mkdir()
        cold_env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
        cold_env["PYTHONPYCACHEPREFIX"] = str(root / "no-pycache")
        cold = [
            _start_to_first_run(_worker(store, experiment, 5000 + i, 1), stamp, cold_env)
            for i in range(3)
        ]
        rows.append(_stage("(w0) start to first run, no bytecode cache", cold, 0, floor, 1, ""))
        # Untimed: fill the bytecode cache the timed tasks read (both code paths).
        tasks = ("--tasks", "bench-startup-tasks")
        _start_to_first_run(_worker(store, experiment, 0, 1), stamp, env)
        _start_to_first_run(_worker(store, experiment, 0, 1, *tasks), stamp, env)
        # Every repeat is a different array task (its runs are not done yet).
        first = [
            _start_to_first_run(_worker(store, experiment, 10 + i, 1), stamp, env)
            for i in range(repeats)
        ]
        rows.append(_stage("(w1) start to first run, identity", first, 0, floor, 1, target))
        listed = [
            _start_to_first_run(_worker(store, experiment, 100 + i, 1, *tasks), stamp, env)
            for i in range(repeats)
        ]
        rows.append(_stage("(w2) start to first run, --tasks 150k", listed, 0, floor, 1, target))
        block = [
            _start_to_first_run(_worker(store, experiment, 1000 + i, 100), stamp, env)
            for i in range(max(3, repeats // 3))
        ]
        rows.append(_stage("(w3) whole task of 100 trivial runs", block, 1, floor, 100, ""))
        if os.environ.get("METALAB_TEST_POSTGRES_URL"):
            rows.append(_postgres_stage(root, env, repeats, floor))
    print_table("worker start-up: python -m metalab.worker, spawn to first run", rows)
    for row in rows:
        cpu = row.extra
        print(
            f"{row.stage:<44} CPU of the worker process: median {cpu['cpu_median_s']:.3f}s, "
            f"min {cpu['cpu_min_s']:.3f}s"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI)")
    main(parser.parse_args().quick)
