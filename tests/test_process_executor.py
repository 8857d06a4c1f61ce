"""ProcessExecutor: start methods, __main__/notebook operations, crashes, timeouts, cancel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab import ProcessExecutor
from metalab.errors import ExecutorError
from metalab.records import RunState


@metalab.operation
def square(params: dict[str, Any], capture: Any) -> None:
    capture.metric("square", params["x"] ** 2)


@metalab.operation
def misbehave(params: dict[str, Any], capture: Any) -> None:
    """Task x == 3 dies the way the ``how`` parameter says; every other task succeeds."""
    if params["x"] == 3:
        how = params["how"]
        if how == "exit":
            os._exit(7)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "segfault":
            import ctypes
            import faulthandler

            # The crash is the point of the test: without this, pytest's faulthandler
            # (inherited through fork) prints a "Fatal Python error" dump of every thread.
            faulthandler.disable()
            ctypes.string_at(0)
        if how == "sleep":
            time.sleep(60)
        if how == "raise":
            raise ValueError("plain failure")
    capture.metric("x", params["x"])


@metalab.operation
def slow(params: dict[str, Any], capture: Any) -> None:
    time.sleep(0.15)
    capture.metric("x", params["x"])


def _exp(op: Any, n: int, name: str = "pe", **extra: list[Any]) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=op,
        params=metalab.grid(x=list(range(n)), **extra),
        seeds=metalab.seeds(base=1),
    )


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_start_methods_run_everything(tmp_path: Path, method: str) -> None:
    handle = metalab.run(
        _exp(square, 20),
        store=tmp_path / "s",
        executor=ProcessExecutor(max_workers=2, mp_context=method),
    )
    results = handle.result(timeout=30)
    assert len(results) == 20
    assert sorted(r.metrics["square"] for r in results) == [x * x for x in range(20)]
    assert handle.status.completed == 20 and handle.status.running == 0
    workers = {r.record.provenance.pid for r in results if r.record.provenance}  # type: ignore[attr-defined]
    assert os.getpid() not in workers


def test_records_reach_on_record_in_completion_order(tmp_path: Path) -> None:
    progress = metalab.Progress(display_metrics=["square:.1f"], use_rich=False, stream=_Sink())
    handle = metalab.run(
        _exp(square, 12),
        store=tmp_path / "s",
        executor=ProcessExecutor(max_workers=2, mp_context="fork"),
        progress=progress,
    )
    handle.result(timeout=30)
    snap = progress.snapshot
    assert snap.completed == 12 and snap.failed == 0
    assert "square" in snap.latest


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("how", ["exit", "kill", "segfault"])
def test_hard_crash_fails_only_its_run(tmp_path: Path, how: str) -> None:
    handle = metalab.run(
        _exp(misbehave, 8, how=[how]),
        store=tmp_path / "s",
        executor=ProcessExecutor(max_workers=2, mp_context="fork", chunk_size=4),
    )
    results = handle.result(timeout=30)
    by_x = {r.params["x"]: r for r in results}
    assert len(by_x) == 8
    crashed = by_x[3]
    assert crashed.status is RunState.FAILED
    assert crashed.error.type == "WorkerCrashedError"
    assert "task 3" in crashed.error.message
    assert all(by_x[x].status is RunState.SUCCESS for x in by_x if x != 3)
    status = handle.status
    assert (status.completed, status.failed, status.running) == (7, 1, 0)


def test_ordinary_exception_is_not_a_crash(tmp_path: Path) -> None:
    handle = metalab.run(
        _exp(misbehave, 6, how=["raise"]),
        store=tmp_path / "s",
        executor=ProcessExecutor(max_workers=2, mp_context="fork"),
    )
    results = handle.result(timeout=30)
    failed = results.failed
    assert len(failed) == 1 and failed[0].error.type == "ValueError"


@pytest.mark.parametrize("where", ["run", "executor"])
def test_timeout_kills_only_the_slow_run(tmp_path: Path, where: str) -> None:
    executor = ProcessExecutor(
        max_workers=2, mp_context="fork", timeout=1.0 if where == "executor" else None
    )
    started = time.monotonic()
    handle = metalab.run(
        _exp(misbehave, 6, how=["sleep"]),
        store=tmp_path / "s",
        executor=executor,
        timeout=1.0 if where == "run" else None,
    )
    results = handle.result(timeout=20)
    assert time.monotonic() - started < 10
    by_x = {r.params["x"]: r for r in results}
    assert by_x[3].status is RunState.FAILED
    assert by_x[3].error.type == "RunTimeoutError"
    assert sum(r.status is RunState.SUCCESS for r in results) == 5


def test_cancel_stops_scheduling_and_leaves_nothing_running(tmp_path: Path) -> None:
    first = threading.Event()
    progress = metalab.Progress(use_rich=False, stream=_Sink())
    original = progress.record_finished

    def on_finished(status: str, metrics: dict[str, Any]) -> None:
        original(status, metrics)
        first.set()

    progress.record_finished = on_finished  # type: ignore[method-assign]
    handle = metalab.run(
        _exp(slow, 40),
        store=tmp_path / "s",
        executor=ProcessExecutor(max_workers=2, mp_context="fork"),
        progress=progress,
    )
    assert first.wait(20)
    handle.cancel()
    handle.result(timeout=20)
    status = handle.status
    assert status.running == 0 and status.pending == 0
    assert status.cancelled > 0
    assert status.completed + status.failed + status.cancelled == 40
    assert status.completed < 40


def test_resume_after_crash_reruns_only_the_failed_run(tmp_path: Path) -> None:
    store = tmp_path / "s"
    exp = _exp(misbehave, 5, how=["exit"])
    metalab.run(exp, store=store, executor=ProcessExecutor(2, mp_context="fork")).result(30)
    again = metalab.run(exp, store=store, executor=ProcessExecutor(2, mp_context="fork"))
    assert again.status.skipped == 4
    again.result(30)


def test_derived_metrics_run_in_workers(tmp_path: Path) -> None:
    def doubled(run: Any) -> dict[str, Any]:
        return {"double": run.metrics["square"] * 2}

    results = metalab.run(
        _exp(square, 4),
        store=tmp_path / "s",
        executor=ProcessExecutor(2),
        derived_metrics=[doubled],
    ).result(30)
    assert sorted(r.derived["double"] for r in results) == [0, 2, 8, 18]


def test_notebook_cell_operation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A notebook cell's functions live in a module that no worker can import.
    monkeypatch.chdir(tmp_path)
    cell = types.ModuleType("__notebook_cell__")
    code = textwrap.dedent(
        """
        import metalab
        OFFSET = 100

        def helper(x):
            return x + OFFSET

        @metalab.operation
        def nb_op(params, capture):
            capture.metric("y", helper(params["x"]))

        exp = metalab.Experiment(
            name="nb", version="1", context={}, operation=nb_op,
            params=metalab.grid(x=[1, 2, 3]), seeds=metalab.seeds(base=0),
        )
        """
    )
    exec(compile(code, "<notebook cell>", "exec"), cell.__dict__)
    assert "__notebook_cell__" not in sys.modules
    for method in ("spawn", "fork"):
        results = metalab.run(
            cell.exp,
            store=f"./runs/{method}",
            executor=ProcessExecutor(max_workers=2, mp_context=method),
        ).result(30)
        assert sorted(r.metrics["y"] for r in results) == [101, 102, 103]


SCRIPT = """
import metalab
from metalab import ProcessExecutor

@metalab.operation
def estimate(params, seeds, capture):
    rng = seeds.numpy()
    capture.metric("v", float(rng.random()) + params["n"])

exp = metalab.Experiment(
    name="script_exp", version="0.1", context={}, operation=estimate,
    params=metalab.grid(n=[1, 2, 3, 4]), seeds=metalab.seeds(base=42, replicates=2),
)
handle = metalab.run(exp, executor=ProcessExecutor(max_workers=2, mp_context="{method}"))
results = handle.result()
print("RUNS", len(results), len(results.successful))
"""


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_unguarded_main_script(tmp_path: Path, method: str) -> None:
    # No `if __name__ == "__main__"` guard: workers must not re-run the script.
    script = tmp_path / "exp_script.py"
    script.write_text(SCRIPT.replace("{method}", method))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("RUNS") == 1
    assert "RUNS 8 8" in done.stdout


def test_invalid_arguments() -> None:
    with pytest.raises(ExecutorError, match="max_workers"):
        ProcessExecutor(0)
    with pytest.raises(ExecutorError, match="mp_context"):
        ProcessExecutor(2, mp_context="threads")
    with pytest.raises(ExecutorError, match="timeout"):
        ProcessExecutor(2, timeout=-1)
    with pytest.raises(ExecutorError, match="chunk_size"):
        ProcessExecutor(2, chunk_size=0)
    assert "max_workers=3" in repr(ProcessExecutor(3))


def test_empty_launch_finishes(tmp_path: Path) -> None:
    exp = _exp(square, 3)
    metalab.run(exp, store=tmp_path / "s").result(30)
    handle = metalab.run(exp, store=tmp_path / "s", executor=ProcessExecutor(2))
    assert handle.result(10) is not None
    assert handle.status.skipped == 3


class _Bomb:
    """Pickles fine, but unpickling it raises: stands for a worker-side import failure."""

    def __reduce__(self) -> tuple[Any, ...]:
        import operator

        return (operator.truediv, (1, 0))


def test_worker_that_cannot_rebuild_the_experiment_stops_the_launch(tmp_path: Path) -> None:
    bomb = _Bomb()

    @metalab.operation
    def doomed(capture: Any) -> None:
        capture.metric("x", id(bomb))

    handle = metalab.run(_exp(doomed, 4), store=tmp_path / "s", executor=ProcessExecutor(2))
    with pytest.raises(metalab.MetalabError, match="could not rebuild the experiment"):
        handle.result(timeout=30)
    status = handle.status
    assert status.running == 0 and status.completed == 0


def test_workers_dying_at_start_up_do_not_blame_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every worker dies before it is ready: the launch gives up with a clear error
    # instead of failing each run or respawning forever.
    import metalab.executors.process as process_module

    def die(conn: Any, inherited: Any = None) -> None:
        os._exit(3)

    monkeypatch.setattr(process_module, "_worker_main", die)
    handle = metalab.run(
        _exp(square, 6),
        store=tmp_path / "s",
        executor=ProcessExecutor(2, mp_context="fork"),
    )
    with pytest.raises(metalab.MetalabError, match="keep dying"):
        handle.result(timeout=30)
    status = handle.status
    assert status.failed == 0 and status.running == 0 and status.completed == 0
    assert status.cancelled == 6


@metalab.operation
def forever(params: dict[str, Any], capture: Any) -> None:
    time.sleep(60)


def test_second_cancel_kills_running_runs(tmp_path: Path) -> None:
    handle = metalab.run(
        _exp(forever, 6), store=tmp_path / "s", executor=ProcessExecutor(2, mp_context="fork")
    )
    deadline = time.monotonic() + 10
    while handle.status.running < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    handle.cancel()
    handle.cancel()
    results = handle.result(timeout=10)
    assert time.monotonic() - started < 8
    status = handle.status
    assert (status.running, status.completed, status.cancelled) == (0, 0, 6)
    stopped = [r for r in results if r.status is RunState.CANCELLED]
    assert len(stopped) == 2 and "second handle.cancel()" in stopped[0].error.message
