"""Stale results are never silent: resume counts and reports runs computed by other code,
``rerun="stale"`` re-executes them, and results mark them (``stale`` / ``Run.is_stale``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab.errors import ExperimentError
from metalab.results import Results
from metalab.staleness import decode_tasks, encode_tasks, flags_of, indices_of, mask_of
from metalab.store import FileStore

SCRIPT = """
import sys
import metalab

@metalab.operation
def scale(params, capture):
    capture.metric("y", params["x"] * FACTOR)

exp = metalab.Experiment(
    name="stale", version="0.1", context={}, operation=scale,
    params=metalab.grid(x=[1, 2]), seeds=metalab.seeds(base=1),
)
rerun = sys.argv[1] if len(sys.argv) > 1 else None
handle = metalab.run(exp, store="store", rerun=rerun)
results = handle.result()
print(handle.status.skipped, [r.metrics["y"] for r in results], [r.is_stale for r in results])
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _script(tmp_path: Path, factor: int, *args: str) -> tuple[str, str]:
    """Write the user's script with ``* factor`` in the operation's body and run it."""
    path = tmp_path / "sweep.py"
    path.write_text(SCRIPT.replace("FACTOR", str(factor)))
    done = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip(), done.stderr


def test_edited_operation_body_is_reported_once_and_rerun_on_request(tmp_path: Path) -> None:
    out, err = _script(tmp_path, 1)
    assert out == "0 [1, 2] [False, False]" and "stale" not in err
    # The body changes from * 1 to * 2: run IDs stay (resume matches), but it is said.
    out, err = _script(tmp_path, 2)
    assert out == "2 [1, 2] [True, True]"
    notices = [line for line in err.splitlines() if "stale" in line]
    assert len(notices) == 1, err
    assert "2 of 2 finished runs of stale:0.1 are stale" in notices[0]
    assert "earlier version of the operation" in notices[0]
    assert 'metalab.run(exp, rerun="stale")' in notices[0]
    out, err = _script(tmp_path, 2, "stale")
    assert out == "0 [2, 4] [False, False]"
    assert "re-running 2 stale runs of stale:0.1" in err
    # Recomputed with today's code: nothing to report any more.
    out, err = _script(tmp_path, 2)
    assert out == "2 [2, 4] [False, False]" and "stale" not in err


def _exp(op: Any, xs: list[int], context: Any = None, replicates: int = 1) -> metalab.Experiment:
    return metalab.Experiment(
        name="e",
        version="1",
        context=context if context is not None else {},
        operation=op,
        params=metalab.grid(x=xs),
        seeds=metalab.seeds(base=3, replicates=replicates),
    )


@metalab.operation
def old_code(params: dict[str, Any], capture: Any) -> None:
    capture.metric("y", params["x"])


@metalab.operation
def new_code(params: dict[str, Any], capture: Any) -> None:
    capture.metric("y", params["x"] * 10)


def test_results_mark_stale_rows_in_table_dataframe_and_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metalab.run(_exp(old_code, [1, 2], replicates=2), store="s").result()
    results = metalab.run(_exp(new_code, [1, 2], replicates=2), store="s").result()
    assert "4 of 4 finished runs of e:1 are stale" in capsys.readouterr().err
    assert [row["stale"] for row in results.table()] == [True] * 4
    frame = results.to_dataframe()
    assert frame["stale"].tolist() == [True] * 4 and frame["y"].tolist() == [1, 1, 2, 2]
    assert all(run.is_stale for run in results)
    # The same answer from whole records (the path of stores without columns).
    store = FileStore("s")
    slow = Results.from_records(store.load_records().records, store)
    assert [run.is_stale for run in slow] == [True] * 4
    assert [row["stale"] for row in slow.table()] == [True] * 4


def test_params_added_with_new_code_map_old_runs_by_run_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """x=1,2 ran first; the grid grows to x=0..3 (task indices shift) with new code."""
    metalab.run(_exp(old_code, [1, 2]), store="s").result()
    capsys.readouterr()
    handle = metalab.run(_exp(new_code, [0, 1, 2, 3]), store="s")
    results = handle.result()
    assert "2 of 2 finished runs of e:1 are stale" in capsys.readouterr().err
    assert handle.status.skipped == 2
    by_x = {row["x"]: row for row in results.table()}
    assert {x: row["stale"] for x, row in by_x.items()} == {0: False, 1: True, 2: True, 3: False}
    assert {x: row["y"] for x, row in by_x.items()} == {0: 0, 1: 1, 2: 2, 3: 30}
    loaded = metalab.load_results("s")
    assert sorted(r.params["x"] for r in loaded if r.is_stale) == [1, 2]
    rerun = metalab.run(_exp(new_code, [0, 1, 2, 3]), store="s", rerun="stale").result()
    assert not any(row.get("stale") for row in rerun.table())
    assert sorted(r.metrics["y"] for r in rerun) == [0, 10, 20, 30]


def test_unchanged_code_and_new_context_report_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metalab.run(_exp(old_code, [1, 2]), store="s").result()
    metalab.run(_exp(old_code, [1, 2]), store="s").result()
    assert "stale" not in capsys.readouterr().err
    # Another context means other run IDs: nothing is done, nothing is stale.
    handle = metalab.run(_exp(new_code, [1, 2], context={"data": "v2"}), store="s")
    handle.result()
    assert handle.status.skipped == 0 and "stale" not in capsys.readouterr().err


def test_resume_reads_no_record_to_find_stale_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """Staleness comes from launch manifests: with every record file garbled, resume
    still counts the stale runs (reading a record would have dropped its done marker)."""
    metalab.run(_exp(old_code, list(range(6))), store="s").result()
    store = FileStore("s")
    for record in store.layout.runs_dir.glob("*/*.json"):
        record.write_bytes(b"{garbled")
    capsys.readouterr()
    handle = metalab.run(_exp(new_code, list(range(6))), store="s", dry_run=True)
    captured = capsys.readouterr()
    assert "6 of 6 finished runs of e:1 are stale" in captured.err
    assert handle.status.skipped == 6 and "0 of 6 runs to execute" in captured.out


def _manifests(root: str) -> list[Path]:
    return sorted(FileStore(root).layout.experiments_dir.glob("*.json"))


def _edit_manifest(path: Path, **changes: Any) -> None:
    document = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    path.write_text(json.dumps(document))


def test_another_metalab_major_version_is_stale(capsys: pytest.CaptureFixture[str]) -> None:
    metalab.run(_exp(old_code, [1, 2]), store="s").result()
    [first] = _manifests("s")
    _edit_manifest(first, metalab_version="9.4.1")
    capsys.readouterr()
    results = metalab.run(_exp(old_code, [1, 2]), store="s").result()
    err = capsys.readouterr().err
    assert "2 of 2 finished runs of e:1 are stale" in err and "metalab 9.x" in err
    assert "version of the operation" not in err  # the code itself did not change
    assert [row["stale"] for row in results.table()] == [True, True]


def test_manifests_without_launch_sets_count_as_launching_everything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metalab.run(_exp(old_code, [1, 2, 3]), store="s").result()
    [first] = _manifests("s")
    _edit_manifest(first, launched_tasks=None)  # as written before launch sets existed
    capsys.readouterr()
    metalab.run(_exp(new_code, [1, 2, 3]), store="s").result()
    assert "3 of 3 finished runs of e:1 are stale" in capsys.readouterr().err


@pytest.mark.parametrize(
    "garbage",
    [
        "not a dict",
        {"encoding": "zlib-bitmap-b64", "size": 3, "data": "%%%"},
        {"encoding": "zlib-bitmap-b64", "size": 3, "data": "eJzLSM3JyQcABiwCFQ=="},
        {"encoding": "zlib-bitmap-b64", "size": 999, "data": "eJxjAAAAAgAB"},
        {"encoding": "other", "size": 3, "data": ""},
    ],
)
def test_garbled_launch_sets_are_ignored_not_trusted(
    garbage: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A co-user of a shared store can write any manifest: a bad set claims no task."""
    metalab.run(_exp(old_code, [1, 2, 3]), store="s").result()
    metalab.run(_exp(old_code, [1, 2, 3]), store="s").result()
    _first, second = _manifests("s")
    _edit_manifest(second, launched_tasks=garbage)
    capsys.readouterr()
    handle = metalab.run(_exp(new_code, [1, 2, 3]), store="s")
    handle.result()
    # The older, intact manifest still tells that all three came from the old code.
    assert "3 of 3 finished runs of e:1 are stale" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["all", "STALE", True, 1, ["stale"]])
def test_rerun_accepts_only_the_documented_values(bad: Any) -> None:
    with pytest.raises(ExperimentError) as caught:
        metalab.run(_exp(old_code, [1]), store="s", rerun=bad)
    message = str(caught.value)
    assert repr(bad) in message and "'stale'" in message and "None" in message
    assert not Path("s").exists()  # refused before anything was written


@given(st.lists(st.booleans(), max_size=300))
def test_task_sets_round_trip_through_masks_and_manifests(flags: list[bool]) -> None:
    mask = mask_of(flags)
    assert flags_of(mask, len(flags)) == bytes(flags)
    assert indices_of(mask, len(flags)) == [t for t, f in enumerate(flags) if f]
    entry = json.loads(json.dumps(encode_tasks(mask, len(flags))))
    assert decode_tasks(entry, len(flags)) == mask
    assert decode_tasks(entry, len(flags) + 8) is None  # another plan's size: unusable
