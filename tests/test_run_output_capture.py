"""What an operation prints and warns, and a failing run's traceback, are kept in its log.

Thread executor: several runs print concurrently from threads of one process; each log
holds that run's lines only, the terminal still gets everything, and ``sys.stdout``,
``sys.stderr`` and ``warnings.showwarning`` are the same objects after the launch.
Process executor: the same from worker processes, and a crash keeps what was printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.capture import Capture, output
from metalab.cli import main as cli_main
from metalab.errors import StoreError
from metalab.store.file import FileStore
from small_disk import mounted_small_disk

# Barriers by name (a context holds only JSON-like values): threads of one process only.
BARRIERS: dict[str, threading.Barrier] = {}
LINE = re.compile(r"^\S+ (\[stdout\]|\[stderr\]|\[warning\]|[A-Z]+) +\[[^\]]+\] (.*)$")


def _entries(log: str) -> list[tuple[str, str]]:
    """(marker, text) of each log line (continuation lines of a traceback left out)."""
    found = []
    for line in log.splitlines():
        match = LINE.match(line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def chatty(params: Any, capture: Any, context: Any) -> None:
    """Print, write to stderr and warn, interleaved with the other runs; fail on x=3."""
    x = params["x"]
    if "barrier" in context:
        BARRIERS[context["barrier"]].wait(timeout=30)  # every run is executing at once from here
    for i in range(5):
        print(f"run {x} line {i}")
        time.sleep(0.002)
    sys.stderr.write(f"run {x} to stderr\n")
    capture.log(f"run {x} via capture.log")
    # The same text from the same line in every run: each run's log still gets it.
    warnings.warn("shared warning", UserWarning, stacklevel=1)
    warnings.warn(f"warning of run {x}", RuntimeWarning, stacklevel=1)
    if x == 3:
        raise KeyError(f"missing key of run {x}")


def _exp(name: str, xs: list[int], **context: Any) -> metalab.Experiment:
    return metalab.Experiment(name, "1", context, chatty, metalab.grid(x=xs), metalab.seeds(0))


def _assert_own_output(run: Any) -> None:
    x = run.params["x"]
    entries = _entries(run.log)
    assert [t for m, t in entries if m == "[stdout]"] == [f"run {x} line {i}" for i in range(5)]
    assert [t for m, t in entries if m == "[stderr]"] == [f"run {x} to stderr"]
    assert ("INFO", f"run {x} via capture.log") in entries
    warned = [t for m, t in entries if m == "[warning]"]
    assert len(warned) == 2, run.log
    assert re.fullmatch(r"UserWarning: shared warning \(.+:\d+\)", warned[0]), warned[0]
    assert warned[1].startswith(f"RuntimeWarning: warning of run {x} (")
    # Nothing of any other run.
    others = re.findall(r"run (\d+)", run.log)
    assert set(others) == {str(x)}, run.log
    if x == 3:
        assert run.status.value == "failed"
        assert "Traceback (most recent call last):" in run.log
        assert "KeyError: 'missing key of run 3'" in run.log
        assert "raise KeyError" in run.log  # the operation's own frame
        # The traceback comes after everything the run printed.
        assert run.log.index("Traceback") > run.log.index("shared warning")
    else:
        assert run.status.value == "success" and "Traceback" not in run.log


def test_eight_concurrent_thread_runs_each_keep_their_own_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    before = (sys.stdout, sys.stderr, warnings.showwarning)
    BARRIERS["threads"] = threading.Barrier(8)
    exp = _exp("threads", list(range(8)), barrier="threads")
    # What Python would show on the terminal (Python's own filters and hook) is recorded.
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        hook = warnings.showwarning
        results = metalab.run(
            exp, store=str(tmp_path), executor=metalab.ThreadExecutor(max_workers=8), progress=False
        ).result()
        assert warnings.showwarning is hook
    assert (sys.stdout, sys.stderr, warnings.showwarning) == before
    assert len(results) == 8
    for run in results:
        _assert_own_output(run)
    # Tee, not swallow: the terminal saw every line too.
    seen = capfd.readouterr()
    for x in range(8):
        # (print writes the text and its newline apart: threads interleave between them)
        assert all(seen.out.count(f"run {x} line {i}") == 1 for i in range(5))
        assert f"run {x} to stderr" in seen.err
    # Every distinct warning reaches the usual hook; one repeated by every run (same
    # text, same line) only once, as Python shows it, although each run's log has it.
    assert sorted(str(w.message) for w in shown) == ["shared warning"] + [
        f"warning of run {x}" for x in range(8)
    ]


def test_driver_thread_output_is_not_in_any_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started, release = threading.Event(), threading.Event()

    @metalab.operation
    def waits(params: Any) -> None:
        started.set()
        assert release.wait(timeout=30)
        print("from the run")

    exp = metalab.Experiment("driver", "1", {}, waits, metalab.grid(x=[1]), metalab.seeds(0))
    handle = metalab.run(exp, store=str(tmp_path), progress=False)
    assert started.wait(timeout=30)
    print("from the driver while the run executes")
    with pytest.warns(UserWarning, match="driver warning"):
        warnings.warn("driver warning", UserWarning, stacklevel=1)
    release.set()
    (run,) = handle.result()
    assert "from the run" in run.log
    assert "driver" not in run.log
    out = capsys.readouterr().out
    assert "from the driver while the run executes" in out and "from the run" in out


def repeats(params: Any) -> None:
    """The same warning three times from one line (what a loop over NumPy calls does)."""
    for _ in range(3):
        warnings.warn("divide by zero", RuntimeWarning, stacklevel=1)


@pytest.mark.parametrize(
    ("action", "per_run", "shown_total"), [("default", 1, 1), ("always", 3, 9)]
)
def test_filters_decide_how_often_a_repeated_warning_is_kept(
    tmp_path: Path, action: str, per_run: int, shown_total: int
) -> None:
    exp = metalab.Experiment(
        f"repeats-{action}",
        "1",
        {},
        metalab.operation(repeats),
        metalab.grid(x=[1, 2, 3]),
        metalab.seeds(0),
    )
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter(action)
        results = metalab.run(exp, store=str(tmp_path), progress=False).result()
    for run in results:
        # One after another on one thread: each run's log still has its own copy.
        assert run.log.count("[warning]") == per_run, run.log
    assert len(shown) == shown_total


def test_quiet_run_opens_no_log_and_streams_are_restored_after_cancel(tmp_path: Path) -> None:
    before = (sys.stdout, sys.stderr, warnings.showwarning)

    @metalab.operation
    def quiet(params: Any, capture: Any) -> None:
        capture.metric("x", params["x"])
        if params["x"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C in a run looks like to execute_task

    exp = metalab.Experiment("quiet", "1", {}, quiet, metalab.grid(x=[1, 2]), metalab.seeds(0))
    results = metalab.run(exp, store=str(tmp_path), progress=False).result()
    assert [r.status.value for r in results] == ["success", "cancelled"]
    assert (sys.stdout, sys.stderr, warnings.showwarning) == before
    store = FileStore(tmp_path)
    # Printing nothing costs nothing: no log file was created for the quiet runs.
    assert not list(store.layout.root.rglob("*.log"))
    assert all(store.read_log(r.run_id) == "" for r in results)


def test_partial_lines_carriage_returns_and_a_bounded_buffer(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    capture = Capture(store, "a" * 32, "w")
    with output.installed(), output.routed(capture):
        # A progress bar redraws with \r: the log keeps what the terminal finally shows.
        for pct in (10, 50, 100):
            sys.stderr.write(f"\rprogress {pct}%")
        sys.stderr.write("\n")
        sys.stdout.write("no newline yet")
        assert store.read_log("a" * 32).count("[stdout]") == 0  # held until complete
        sys.stdout.write(" - now\n")
        sys.stdout.write("x" * (output.MAX_PENDING + 10))
        sys.stdout.write("y")  # the long line was already written out, then the rest
        print("tail", end="")  # written when the run ends
    capture.close()
    entries = _entries(store.read_log("a" * 32))
    assert entries == [
        ("[stderr]", "progress 100%"),
        ("[stdout]", "no newline yet - now"),
        ("[stdout]", "x" * (output.MAX_PENDING + 10)),
        ("[stdout]", "ytail"),
    ]


def test_installed_restores_on_error_and_nests() -> None:
    before = (sys.stdout, sys.stderr, warnings.showwarning)
    with pytest.raises(RuntimeError), output.installed():
        with output.installed():
            assert sys.stdout is not before[0] and output.is_installed()
        assert sys.stdout is not before[0]  # the outer launch still captures
        raise RuntimeError("launch failed")
    assert (sys.stdout, sys.stderr, warnings.showwarning) == before
    assert not output.is_installed()


def test_process_executor_keeps_output_and_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    exp = _exp("procs", [1, 3])
    results = metalab.run(
        exp, store=str(tmp_path), executor=metalab.ProcessExecutor(max_workers=2), progress=False
    ).result()
    for run in results:
        _assert_own_output(run)
        assert "[stdout]" in run.log and ":p" in run.log  # written by a process worker
    # The worker's stream gets the output as before.
    seen = capfd.readouterr()
    assert "run 1 line 0" in seen.out and "run 3 to stderr" in seen.err


def crashes(params: Any) -> None:
    """Print a line, then die without any Python cleanup (as a segfault would)."""
    print("printed before the crash")
    print("still unterminated", end="")
    os._exit(9)


def test_process_crash_keeps_complete_lines_printed_before_it(tmp_path: Path) -> None:
    exp = metalab.Experiment(
        "crash", "1", {}, metalab.operation(crashes), metalab.grid(x=[1]), metalab.seeds(0)
    )
    executor = metalab.ProcessExecutor(max_workers=1)
    (run,) = metalab.run(exp, store=str(tmp_path), executor=executor, progress=False).result()
    assert run.status.value == "failed"
    assert _entries(run.log)[0] == ("[stdout]", "printed before the crash")


def test_show_and_logs_commands_display_the_captured_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True):  # kept in the logs, not in pytest's summary
        warnings.simplefilter("default")
        results = metalab.run(_exp("cli", [2, 3]), store=str(tmp_path), progress=False).result()
    failed = next(r for r in results if r.status.value == "failed")
    capsys.readouterr()
    assert cli_main(["show", str(tmp_path), failed.run_id, "--tail", "100"]) != 2
    shown = capsys.readouterr().out
    assert "[stdout]" in shown and "run 3 line 0" in shown and "[warning]" in shown
    assert "KeyError: 'missing key of run 3'" in shown
    assert cli_main(["logs", str(tmp_path), "--failed"]) != 2
    logs = capsys.readouterr().out
    assert "run 3 to stderr" in logs and "Traceback (most recent call last):" in logs
    assert "run 2 line" not in logs


@pytest.fixture
def full_disk(tmp_path: Path) -> Any:
    """A real 1 MiB tmpfs, filled up by "another job" (the file is returned to free it)."""
    with mounted_small_disk(tmp_path / "disk") as mount_point:
        yield mount_point


def prints_on_a_full_disk(params: Any, context: Any) -> None:
    """Fill the store's disk, print (the log write fails), carry on, then free the disk."""
    filler = Path(context["filler"])
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    print("this line cannot be stored")  # must not raise inside the operation
    Path(context["after"]).write_text("the operation went on")
    filler.unlink()


def test_a_print_that_cannot_be_stored_stops_the_launch_not_the_operation(
    full_disk: Path, tmp_path: Path
) -> None:
    after = tmp_path / "after.txt"
    exp = metalab.Experiment(
        "fullprint",
        "1",
        {"filler": str(full_disk / "other-job.bin"), "after": str(after)},
        metalab.operation(prints_on_a_full_disk),
        metalab.grid(x=[1]),
        metalab.seeds(0),
    )
    store = full_disk / "store"
    FileStore(store).layout.root.mkdir(parents=True, exist_ok=True)
    with pytest.raises(StoreError, match=r"cannot write the log of run .*No space left"):
        metalab.run(exp, store=str(store), progress=False).result(timeout=60)
    assert after.read_text() == "the operation went on"
    # A store's fault is not the run's: nothing recorded, so resume runs it again.
    assert not metalab.load_results(str(store))
