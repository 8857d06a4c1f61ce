"""``metalab ls|status|show|logs|cancel`` on real stores made by ``metalab.run``.

Commands run in-process through :func:`metalab.cli.main` (stdout/stderr captured), and in a
subprocess on a pseudo-terminal where the terminal matters (rich output, Ctrl-C).
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import metalab
from child_signals import default_sigint
from metalab.cli import main
from metalab.records import ErrorInfo, RunRecord, RunState

Captured = tuple[int, str, str]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Captured:
    """Run ``metalab argv...``; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = cli(capsys, *argv, "--json")
    return code, json.loads(out)  # exactly one document: json.loads rejects anything extra


def work(params: Any, capture: Any) -> None:
    """x == 2 fails with a KeyError; the others log, record a metric and an artifact."""
    capture.log(f"working on x={params['x']}")
    if params["x"] == 2:
        raise KeyError("missing thing")
    capture.metric("y", params["x"] * 1.5)
    capture.artifact("cfg", {"x": params["x"]})


def _exp(name: str, version: str, xs: list[int], replicates: int = 1) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version=version,
        context={},
        operation=work,
        params=metalab.grid(x=xs),
        seeds=metalab.seeds(base=3, replicates=replicates),
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """demo:1 and demo:2 (3 runs, one failed each) and other:1 (20 runs, all succeed)."""
    path = str(tmp_path_factory.mktemp("cli") / "store")
    for exp in (_exp("demo", "1", [1, 2, 3]), _exp("demo", "2", [1, 2, 3])):
        metalab.run(exp, store=path).result()
    metalab.run(_exp("other", "1", [0, 1, 3, 4, 5, 6, 7, 8, 9, 10], 2), store=path).result()
    return path


def _results(store: str, experiment_id: str) -> list[Any]:
    return [r for r in metalab.load_results(store) if r.record.experiment_id == experiment_id]


def _failed_run(store: str) -> Any:
    return next(r for r in _results(store, "demo:1") if r.status.value == "failed")


# -- ErrorInfo --------------------------------------------------------------------------
def test_error_info_str_is_readable_and_repr_and_json_unchanged() -> None:
    info = ErrorInfo("KeyError", "'k'", 'Traceback (most recent call last):\n  File "x"\n')
    assert str(info) == "KeyError: 'k'\nTraceback (most recent call last):\n  File \"x\""
    assert repr(info) == (
        "ErrorInfo(type='KeyError', message=\"'k'\", "
        "traceback='Traceback (most recent call last):\\n  File \"x\"\\n')"
    )
    assert str(ErrorInfo("ValueError", "bad")) == "ValueError: bad"
    record = RunRecord("r", "e:1", RunState.FAILED, "c", "p", "s", {}, 0, 0, error=info)
    assert record.to_json()["error"] == {
        "type": "KeyError",
        "message": "'k'",
        "traceback": info.traceback,
    }


def test_failed_run_error_prints_its_traceback_as_lines(store: str) -> None:
    text = str(_failed_run(store).error)
    lines = text.splitlines()
    assert lines[0] == "KeyError: 'missing thing'"
    assert lines[1] == "Traceback (most recent call last):"
    assert "\\n" not in text and any('raise KeyError("missing thing")' in ln for ln in lines)


# -- ls -----------------------------------------------------------------------------------
def test_ls_lists_every_experiment_with_counts(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = cli_json(capsys, "ls", store)
    assert code == 0 and list(doc) == ["store", "experiments"]
    assert doc["store"] == Path(store).as_uri()
    rows = {row["experiment_id"]: row for row in doc["experiments"]}
    assert list(rows) == ["demo:1", "demo:2", "other:1"]
    assert set(rows["demo:1"]) == {
        "experiment_id",
        "name",
        "version",
        "launches",
        "total",
        "counts",
        "last_activity",
    }
    assert rows["demo:2"]["name"] == "demo" and rows["demo:2"]["version"] == "2"
    assert rows["demo:1"]["counts"] == {"success": 2, "failed": 1, "pending": 0}
    assert rows["other:1"]["total"] == 20
    assert rows["other:1"]["counts"] == {"success": 20, "failed": 0, "pending": 0}
    assert rows["demo:1"]["launches"] == 1 and rows["demo:1"]["last_activity"].startswith("20")

    code, out, _ = cli(capsys, "ls", store)
    assert code == 0
    demo = next(line for line in out.splitlines() if line.startswith("demo:1"))
    assert demo.split()[:6] == ["demo:1", "1", "3", "2", "1", "0"]


def test_ls_counts_from_markers_without_reading_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every record file is replaced by garbage: counts that needed the records would
    # change (or fail); the marker scan gives the same answer.
    path = tmp_path / "store"
    metalab.run(_exp("demo", "1", [1, 2, 3]), store=str(path)).result()
    records = list((path / "runs").glob("*/*.json"))
    assert len(records) == 3
    for record in records:
        record.write_text("not json")
    code, doc = cli_json(capsys, "ls", str(path))
    assert code == 0
    assert doc["experiments"][0]["counts"] == {"success": 2, "failed": 1, "pending": 0}


def test_ls_of_a_missing_directory_is_not_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "ls", str(tmp_path / "nowhere"))
    assert code == 2 and out == ""
    assert "no store at" in err and "nowhere" in err
    assert not (tmp_path / "nowhere").exists()  # reading never creates a store


def test_ls_through_a_fallback_locator(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locator = "fallback://?" + urlencode(
        [("primary", Path(store).as_uri()), ("fallback", str(tmp_path / "spare"))]
    )
    code, doc = cli_json(capsys, "ls", locator)
    assert code == 0
    assert [row["experiment_id"] for row in doc["experiments"]] == ["demo:1", "demo:2", "other:1"]


def test_control_characters_planted_by_a_co_user_are_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A shared store: another account can add manifests. Names with terminal escape
    # sequences (set the title, clear the screen) must reach the reader as text.
    from other_user import run_as_other_user, shared_dir

    root = shared_dir()
    try:
        store = root / "store"
        metalab.run(_exp("demo", "1", [1]), store=str(store)).result()
        (store / "experiments").chmod(0o1777)
        evil = "evil\x1b]0;owned\x07\x1b[2J:1"

        def plant() -> None:
            manifest = {"experiment_id": evil, "name": "evil\x1b[2J", "submitted_at": "2099"}
            (store / "experiments" / "evil_2099.json").write_text(json.dumps(manifest))

        run_as_other_user(plant)
        code, out, err = cli(capsys, "ls", str(store))
        assert code == 0 and "\x1b" not in out + err
        assert "evil\\x1b]0;owned\\x07\\x1b[2J:1" in out
        code, out, err = cli(capsys, "status", str(store), "evil")
        assert code == 2 and "\x1b" not in out + err and "\\x1b" in err
        code, screen = _on_terminal([CLI, "ls", str(store)])
        assert code == 0 and "\x1b]0;owned" not in screen and "owned\\x07" in screen
    finally:
        shutil.rmtree(root)


def test_unknown_scheme_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = cli_json(capsys, "ls", "bogus://x")
    assert code == 2 and "bogus" in doc["error"]["message"]


# -- status -----------------------------------------------------------------------------
def test_status_of_experiment_with_failures_exits_1(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = cli_json(capsys, "status", store, "demo:1")
    assert code == 1
    assert list(doc) == [
        "store",
        "experiment_id",
        "executor",
        "launched_at",
        "slurm_job_ids",
        "source",
        "note",
        "status",
        "complete",
        "failed_run_ids",
    ]
    assert doc["experiment_id"] == "demo:1" and doc["executor"] == "thread"
    assert doc["source"] == "launch" and doc["complete"] is True
    status = doc["status"]
    assert list(status) == [
        "total",
        "completed",
        "running",
        "pending",
        "failed",
        "skipped",
        "cancelled",
    ]
    assert [status[k] for k in ("total", "completed", "running", "pending", "failed")] == [
        3,
        2,
        0,
        0,
        1,
    ]
    assert doc["failed_run_ids"] == [_failed_run(store).run_id]

    code, out, _ = cli(capsys, "status", store, "demo:1")
    assert code == 1 and "demo:1" in out and "complete" in out
    assert f"metalab logs {Path(store).as_uri()} --failed --experiment demo:1" in out


def test_status_by_unique_name_and_by_default(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = cli_json(capsys, "status", store, "other")
    assert code == 0 and doc["experiment_id"] == "other:1"
    assert doc["status"]["completed"] == 20 and doc["failed_run_ids"] == []
    # No EXPERIMENT: the latest launch (other:1), and a pointer to the others.
    code, doc = cli_json(capsys, "status", store)
    assert code == 0 and doc["experiment_id"] == "other:1"
    assert "2 other experiment(s)" in doc["note"]


@pytest.mark.parametrize(
    ("wanted", "message", "candidates"),
    [
        ("demo", "ambiguous", ["demo:1", "demo:2"]),
        ("nope", "no experiment 'nope'", ["demo:1", "demo:2", "other:1"]),
        ("demo:9", "no experiment 'demo:9'", ["demo:1", "demo:2", "other:1"]),
    ],
)
def test_status_of_ambiguous_or_unknown_experiment_lists_candidates(
    store: str, capsys: pytest.CaptureFixture[str], wanted: str, message: str, candidates: list[str]
) -> None:
    code, out, err = cli(capsys, "status", store, wanted)
    assert code == 2 and out == "" and message in err
    assert [line.strip() for line in err.splitlines()[1:]] == candidates
    code, doc = cli_json(capsys, "status", store, wanted)
    assert code == 2 and doc["error"]["exit_code"] == 2
    assert doc["error"]["candidates"] == candidates


def test_status_without_a_reconnectable_spec_uses_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A lock cannot be pickled: the ThreadExecutor still runs it, but saves no spec.
    lock = threading.Lock()

    def locked(params: Any, capture: Any) -> None:
        with lock:
            capture.metric("x", params["x"])

    exp = metalab.Experiment(
        name="locked",
        version="1",
        context={},
        operation=locked,
        params=metalab.grid(x=[1, 2]),
        seeds=metalab.seeds(base=1),
    )
    metalab.run(exp, store=str(tmp_path / "s")).result()
    code, doc = cli_json(capsys, "status", str(tmp_path / "s"))
    assert code == 0 and doc["source"] == "markers" and "spec" in doc["note"]
    assert doc["status"]["completed"] == 2 and doc["complete"] is True


# -- show ---------------------------------------------------------------------------------
def _prefixes(store: str) -> tuple[list[str], str, str]:
    """All run IDs, a prefix shared by several, and a prefix of none."""
    ids = sorted(r.run_id for r in metalab.load_results(store))
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)  # 26 runs, 16 hex digits
    unused = next(
        c + d
        for c in "0123456789abcdef"
        for d in "0123456789abcdef"
        if not any(i.startswith(c + d) for i in ids)
    )
    return ids, shared, unused


def test_show_by_unique_prefix(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    failed = _failed_run(store)
    ids, _, _ = _prefixes(store)
    prefix = next(
        failed.run_id[:n]
        for n in range(4, 33)
        if sum(i.startswith(failed.run_id[:n]) for i in ids) == 1
    )
    code, out, _ = cli(capsys, "show", store, prefix)
    assert code == 1  # the run failed
    assert f"run {failed.run_id}" in out and "demo:1" in out
    assert "KeyError: 'missing thing'" in out
    assert "Traceback (most recent call last):" in out.splitlines()  # a real line of its own
    assert "working on x=2" in out  # log tail
    code, doc = cli_json(capsys, "show", store, prefix.upper())
    assert code == 1 and list(doc) == [
        "store",
        "run_id",
        "experiment_id",
        "status",
        "record",
        "log",
    ]
    assert doc["run_id"] == failed.run_id and doc["status"] == "failed"
    assert doc["record"]["params"] == {"x": 2}
    assert doc["record"]["error"]["traceback"].startswith("Traceback")
    # The log: the run's capture.log line, then the failure's traceback (kept with the run).
    assert doc["log"]["lines"] == len(failed.log.splitlines()) > 1
    assert "working on x=2" in doc["log"]["tail"][0]
    assert "Traceback (most recent call last):" in doc["log"]["tail"][2]


def test_show_of_a_successful_run_lists_metrics_and_artifacts(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = next(r for r in _results(store, "demo:2") if r.params["x"] == 3)
    code, out, _ = cli(capsys, "show", store, ok.run_id)
    assert code == 0
    lines = out.splitlines()
    assert "y  4.5" in lines and "x  3" in lines
    artifact = next(line for line in lines if line.startswith("cfg"))
    assert artifact.split()[:4] == ["cfg", "json", str(ok.record.artifacts[0].size), "B"]
    code, doc = cli_json(capsys, "show", store, ok.run_id, "--tail", "0")
    assert doc["record"]["metrics"] == {"y": 4.5} and doc["log"] == {"lines": 1, "tail": []}
    assert doc["record"]["artifacts"][0]["kind"] == "json"


def test_show_ambiguous_unknown_and_malformed_ids_exit_2(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids, shared, unused = _prefixes(store)
    code, out, err = cli(capsys, "show", store, shared)
    assert code == 2 and out == "" and "ambiguous" in err
    listed = [line.split()[0] for line in err.splitlines()[1:]]
    assert listed == [i for i in ids if i.startswith(shared)]
    code, out, err = cli(capsys, "show", store, unused)
    assert code == 2 and f"no run matches {unused!r}" in err
    code, doc = cli_json(capsys, "show", store, "not-hex")
    assert code == 2 and "hexadecimal" in doc["error"]["message"]


def test_show_finds_runs_of_an_older_launch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "s")
    first = metalab.run(_exp("grow", "1", [1]), store=path).result()[0].run_id
    metalab.run(_exp("grow", "1", [5]), store=path).result()  # same version, new grid
    code, doc = cli_json(capsys, "show", path, first[:8])
    assert code == 0 and doc["run_id"] == first and doc["record"]["params"] == {"x": 1}


# -- logs ---------------------------------------------------------------------------------
def test_logs_failed_heads_each_log_with_run_and_error(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = sorted(
        (r for e in ("demo:1", "demo:2") for r in _results(store, e) if r.status.value == "failed"),
        key=lambda r: r.record.experiment_id,
    )
    code, out, _ = cli(capsys, "logs", store, "--failed")
    assert code == 1
    heads = [line for line in out.splitlines() if line.startswith("== ")]
    assert [h.split()[1] for h in heads] == [r.run_id for r in failed]
    assert all("KeyError: 'missing thing'" in h for h in heads)
    assert out.count("working on x=2") == 2

    code, doc = cli_json(capsys, "logs", store, "--failed", "--experiment", "demo:2")
    assert code == 1 and [r["run_id"] for r in doc["runs"]] == [failed[1].run_id]
    assert list(doc["runs"][0]) == ["run_id", "experiment_id", "status", "error", "lines", "log"]
    assert doc["runs"][0]["error"] == {"type": "KeyError", "message": "'missing thing'"}

    code, out, _ = cli(capsys, "logs", store, "--failed", "--experiment", "other")
    assert code == 0 and "no failed runs" in out


def test_logs_of_one_run_and_tail(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok = next(r for r in _results(store, "other:1") if r.params["x"] == 7)
    code, doc = cli_json(capsys, "logs", store, ok.run_id[:12])
    assert code == 0 and doc["runs"][0]["log"] == ok.log.splitlines()
    assert doc["runs"][0]["error"] is None
    code, doc = cli_json(capsys, "logs", store, ok.run_id, "--tail", "0")
    assert doc["runs"][0]["log"] == [] and doc["runs"][0]["lines"] == 1


@pytest.mark.parametrize("argv", [["logs"], ["logs", "abcd", "--failed"]])
def test_logs_needs_exactly_one_of_run_id_and_failed(
    store: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = cli(capsys, argv[0], store, *argv[1:])
    assert code == 2 and "RUN_ID or --failed" in err


def test_bad_option_values_are_usage_errors(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["logs", store, "--tail", "-3", "--failed"], ["status", store, "--watch", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "positive number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("ls", ["0", "2", "3", "130"]),
        ("status", ["0", "1", "2", "3", "4", "130"]),
        ("show", ["0", "1", "2", "3", "130"]),
        ("logs", ["0", "1", "2", "3", "130"]),
        ("cancel", ["0", "2", "3", "4", "130"]),
    ],
)
def test_help_documents_exit_codes(
    capsys: pytest.CaptureFixture[str], command: str, codes: list[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    epilog = capsys.readouterr().out.split("exit codes:\n", 1)[1]
    listed = [line.split()[0] for line in epilog.splitlines() if line.startswith("  ")]
    listed = [code for code in listed if code.isdigit()]
    assert sorted(listed, key=int) == codes
    assert "exactly one JSON document" in epilog


# -- cancel -------------------------------------------------------------------------------
def test_cancel_of_a_complete_experiment_has_nothing_to_do(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = cli_json(capsys, "cancel", store, "other:1")
    assert code == 0 and doc["cancelled"] is False and doc["unfinished"] == 0
    assert doc["message"].startswith("nothing to cancel: other:1 is complete")


SLOW_SCRIPT = """
import sys, time, metalab

def slow(params, capture):
    time.sleep(float(sys.argv[2]))
    capture.metric("x", params["x"])

exp = metalab.Experiment(name="slow", version="1", context={}, operation=slow,
    params=metalab.grid(x=list(range(int(sys.argv[3])))), seeds=metalab.seeds(base=1))
metalab.run(exp, store=sys.argv[1]).result()
"""


def _slow_launch(
    tmp_path: Path, seconds: str, runs: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    path = str(tmp_path / "s")
    proc = subprocess.Popen([sys.executable, str(script), path, seconds, runs], text=True)
    deadline = time.monotonic() + 30
    while not list((tmp_path / "s" / "done").glob("*/*.done")):
        assert proc.poll() is None and time.monotonic() < deadline, "launch did not start"
        time.sleep(0.1)
    try:
        yield path, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def slow_launch(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A thread launch of 8 runs of 0.5 s driven by another process, started for real."""
    yield from _slow_launch(tmp_path, "0.5", "8")


@pytest.fixture
def long_launch(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Like ``slow_launch`` but ~60 s long, for tests that must catch it running."""
    yield from _slow_launch(tmp_path, "1.0", "60")


def test_cancel_of_a_local_launch_in_another_process(
    slow_launch: tuple[str, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, proc = slow_launch
    code, doc = cli_json(capsys, "cancel", path, "slow")
    assert code == 4 and doc["cancelled"] is False and doc["executor"] == "thread"
    assert f"inside process {proc.pid}" in doc["message"]
    proc.kill()
    proc.wait()
    code, doc = cli_json(capsys, "cancel", path, "slow:1")
    assert code == 0 and doc["cancelled"] is False and doc["unfinished"] > 0
    assert "ended with its driver" in doc["message"]


def test_status_watch_refreshes_until_complete(
    slow_launch: tuple[str, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, proc = slow_launch
    last = metalab.reconnect(path).run_ids[-1]
    code, doc = cli_json(capsys, "show", path, last)
    assert code == 0 and doc["status"] == "unfinished" and doc["record"] is None
    assert doc["experiment_id"] == "slow:1"
    code, out, _ = cli(capsys, "show", path, last[:10])
    assert code == 0 and "none yet: the run has not finished" in out
    code, out, _ = cli(capsys, "status", path, "--watch", "0.3")
    assert code == 0 and proc.wait(timeout=30) == 0
    lines = out.splitlines()
    refreshes = [line for line in lines if line.endswith("cancelled")]
    assert len(refreshes) >= 2 and "slow:1: " in refreshes[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("total  completed"))
    assert lines[header + 1].split()[:2] == ["8", "8"]  # the final view: all completed


def _on_terminal(argv: list[str], interrupt_on: str | None = None) -> tuple[int, str]:
    """Run ``python -c argv[0] argv[1:]`` on a pseudo-terminal; optionally press Ctrl-C.

    With ``interrupt_on``, Ctrl-C is pressed as soon as that text has been drawn (so a
    slow start on a loaded machine cannot let the watched launch finish first).
    Returns the exit code and what the terminal received, without escape sequences.
    """
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-c", *argv],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    os.close(follower)
    chunks: list[bytes] = []
    pending = interrupt_on.encode() if interrupt_on is not None else None
    deadline = time.monotonic() + 60
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        if pending is not None and pending in b"".join(chunks):
            os.killpg(proc.pid, signal.SIGINT)
            pending = None
        assert time.monotonic() < deadline, "the terminal program did not finish"
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    return proc.wait(timeout=30), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


CLI = "import sys; from metalab.cli import main; sys.exit(main(sys.argv[1:]))"
CLI_WITHOUT_RICH = "import sys; sys.modules['rich'] = None; " + CLI.split("; ", 1)[1]


def test_ctrl_c_while_watching_exits_with_one_line(
    long_launch: tuple[str, subprocess.Popen[str]],
) -> None:
    path, _ = long_launch
    code, screen = _on_terminal([CLI, "status", path, "--watch", "0.2"], interrupt_on="total")
    assert code == 130, screen
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen
    assert screen.count("interrupted") == 1
    assert "metalab status: interrupted (nothing was cancelled)" in screen
    assert "┃ total" in screen  # rich drew the live view on the terminal


def test_rich_on_a_terminal_plain_text_without_rich(store: str) -> None:
    code, screen = _on_terminal([CLI, "ls", store])
    assert code == 0 and "┃ experiment" in screen and "demo:1" in screen
    code, screen = _on_terminal([CLI_WITHOUT_RICH, "ls", store])
    assert code == 0 and "┃" not in screen
    assert any(line.split()[:2] == ["experiment", "launches"] for line in screen.splitlines())


def test_unreachable_postgres_exits_3_and_hides_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("psycopg")
    secret = "s3cret-Pw-4711"
    locator = f"postgresql://bob:{secret}@127.0.0.1:1/metalab?schema=x"
    code, out, err = cli(capsys, "status", locator, "exp:1", "--json")
    assert code == 3 and "store unreachable" in err
    assert json.loads(out)["error"]["exit_code"] == 3
    assert secret not in out + err


@pytest.mark.parametrize("module", ["metalab", "metalab.cli"])
def test_python_dash_m_has_every_command(module: str, store: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "ls", store, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert {e["experiment_id"] for e in json.loads(done.stdout)["experiments"]} >= {"demo:1"}


def test_json_stays_valid_when_a_remembered_password_occurs_in_a_number(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from metalab.store.postgres_config import _SECRETS, _SECRETS_LOCK, redact, remember_secret

    run = next(r for r in _results(store, "demo:2") if r.params["x"] == 3)
    digits = repr(round(run.record.duration, 6))[-2:]  # part of a number in the doc
    with _SECRETS_LOCK:
        before = set(_SECRETS)
    remember_secret(digits)
    try:
        code, doc = cli_json(capsys, "show", store, run.run_id)  # parses: still valid JSON
        assert code == 0 and isinstance(doc["record"]["duration_s"], float)
        assert doc["run_id"] == redact(run.run_id)  # strings are masked, numbers never
    finally:
        with _SECRETS_LOCK:
            _SECRETS.clear()
            _SECRETS.update(before)
