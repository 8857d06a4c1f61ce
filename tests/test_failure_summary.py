"""Failures in plain sight: ``result()`` prints one line per error type (count, first
message, the command that shows the traceback), and tables carry error columns."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.cli import main
from metalab.results import Results
from metalab.store import FileStore


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@metalab.operation
def flaky(params: dict[str, Any], capture: Any) -> None:
    """x = 1, 2 raise KeyError, x = 3 raises ValueError (two lines), x = 4, 5 succeed."""
    x = params["x"]
    if x in (1, 2):
        raise KeyError(f"column {x} missing")
    if x == 3:
        raise ValueError("bad input\nsecond line of the message")
    capture.metric("y", x * 2)


@metalab.operation
def fine(params: dict[str, Any], capture: Any) -> None:
    capture.metric("y", params["x"])


def _exp(op: Any, xs: list[int]) -> metalab.Experiment:
    return metalab.Experiment(
        name="f",
        version="1",
        context={},
        operation=op,
        params=metalab.grid(x=xs),
        seeds=metalab.seeds(base=5),
    )


def _report_lines(err: str) -> list[str]:
    start = err.splitlines().index("metalab: 3 of 5 runs of f:1 did not succeed:")
    return err.splitlines()[start : start + 3]


def test_result_prints_one_line_per_error_type_once(capsys: pytest.CaptureFixture[str]) -> None:
    handle = metalab.run(_exp(flaky, [1, 2, 3, 4, 5]), store="s")
    results = handle.result()
    header, keys, values = _report_lines(capsys.readouterr().err)
    assert header == "metalab: 3 of 5 runs of f:1 did not succeed:"
    first_key = next(r for r in results if r.params["x"] == 1)
    first_value = next(r for r in results if r.params["x"] == 3)
    store = shlex.quote(str(Path("s").absolute()))
    assert keys == (
        f"  KeyError (2 runs): 'column 1 missing'  [first: run {first_key.run_id[:12]}; "
        f"full traceback: metalab show {store} {first_key.run_id}]"
    )
    # A multi-line message shows its first line; the traceback command has the rest.
    assert values.startswith("  ValueError (1 run): bad input ...  [first: run ")
    assert values.endswith(f"metalab show {store} {first_value.run_id}]")
    handle.result()
    assert "did not succeed" not in capsys.readouterr().err  # said once per launch


def test_the_printed_command_shows_the_whole_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metalab.run(_exp(flaky, [1, 2, 3, 4, 5]), store="s").result()
    _, keys, _ = _report_lines(capsys.readouterr().err)
    command = re.search(r"full traceback: (metalab show .*)\]$", keys)
    assert command is not None
    argv = shlex.split(command.group(1))[1:]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 1  # show of a failed run
    assert "Traceback (most recent call last):" in out
    assert 'raise KeyError(f"column {x} missing")' in out


def test_no_failure_no_report(capsys: pytest.CaptureFixture[str]) -> None:
    results = metalab.run(_exp(fine, [1, 2]), store="s").result()
    assert "did not succeed" not in capsys.readouterr().err
    assert results.failure_report() == "" and results.error_groups() == []
    assert all("error_type" not in row for row in results.table())


def test_table_and_dataframe_carry_error_type_and_message() -> None:
    results = metalab.run(_exp(flaky, [1, 2, 3, 4, 5]), store="s").result()
    rows = {row["x"]: row for row in results.table()}
    assert rows[1]["error_type"] == "KeyError" and rows[1]["error_message"] == "'column 1 missing'"
    assert rows[3]["error_type"] == "ValueError"
    assert rows[4]["error_type"] is None and rows[4]["status"] == "success"
    text = str(results.table())
    assert "error_type" in text and "second line" not in text  # one line per cell
    frame = results.to_dataframe().set_index("param_x")
    assert frame.loc[2, "error_type"] == "KeyError"
    assert frame.loc[3, "error_message"] == "bad input\nsecond line of the message"
    assert frame[["error_type", "error_message"]].loc[[4, 5]].isna().all().all()
    assert all("error_type" not in row for row in results.successful.table())
    # Whole records give the same columns (stores without a columnar loader).
    store = FileStore("s")
    slow = Results.from_records(store.load_records().records, store)
    assert [(r["x"], r.get("error_type")) for r in slow.table()] == [
        (x, rows[x]["error_type"]) for x in (1, 2, 3, 4, 5)
    ]
    groups = results.error_groups()
    assert [(g.type, g.count) for g in groups] == [("KeyError", 2), ("ValueError", 1)]


def test_failures_of_another_executor_are_reported_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle = metalab.run(
        _exp(flaky, [1, 2, 3, 4, 5]), store="s", executor=metalab.ProcessExecutor(max_workers=2)
    )
    handle.result(timeout=120)
    lines = _report_lines(capsys.readouterr().err)
    assert lines[1].startswith("  KeyError (2 runs): 'column 1 missing'")
    assert lines[2].startswith("  ValueError (1 run): bad input ...")
