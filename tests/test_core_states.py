"""scan_states and the layout the scanners take (ScanLayout) vs the reference.

The scanners know no directory name, suffix or shard rule of their own: these tests give
them layouts other than metalab's and check that every path they look at comes from it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from metalab import _core
from metalab.errors import StoreError
from metalab.records import RunState, StoredState
from metalab.store.layout import FileLayout

LABELS = ("done", "failed", "absent")
HEX = "ab" * 16
IDS = ["ab12", "ab34", "abc5", "cd56", "zz", "x", "é€x", HEX, "cdcd" * 8]


def _layout(
    root: Path, suffixes: tuple[str, str, str], shard_width: int, names: tuple[str, str, str]
) -> _core.ScanLayout:
    runs, done, failed = (root / name for name in names)
    return _core.ScanLayout(
        runs_dir=runs,
        done_dir=done,
        failed_dir=failed,
        record_suffix=suffixes[0],
        done_suffix=suffixes[1],
        failed_suffix=suffixes[2],
        shard_width=shard_width,
    )


def _states(layout: _core.ScanLayout, run_ids: list[str]) -> tuple[list[str], list[str]]:
    return ref.scan_states(
        layout.runs_dir,
        layout.done_dir,
        layout.failed_dir,
        run_ids,
        suffixes=(layout.record_suffix, layout.done_suffix, layout.failed_suffix),
        shard_width=layout.shard_width,
    )


LAYOUTS = st.tuples(
    st.sampled_from([(".json", ".done", ".failed"), (".rec", ".ok", ".json")]),
    st.integers(1, 3),
    st.sampled_from([("runs", "done", "failed"), ("recs", "ok", "done")]),
)


@settings(deadline=None)
@given(LAYOUTS, st.data())
def test_scan_states_equals_the_reference(
    chosen: tuple[tuple[str, str, str], int, tuple[str, str, str]], data: st.DataObject
) -> None:
    suffixes, shard_width, names = chosen
    # Files mostly where the layout looks (its directories, suffixes and shard width), and
    # the rest where it must not look: other suffixes, shards, directories, temporaries.
    files = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(IDS),
                st.sampled_from([*names, "ok", "recs"]),
                st.one_of(
                    st.sampled_from(suffixes),
                    st.sampled_from(["", ".done", ".json", ".failed", ".ok", ".json.tmp"]),
                ),
                st.one_of(st.just(shard_width), st.integers(1, 3)),
                st.booleans(),  # hidden (a leading dot, as temporaries have)
            ),
            max_size=16,
        )
    )
    run_ids = data.draw(st.lists(st.sampled_from([*IDS, "q", ""]), max_size=10))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for run_id, top, suffix, width, hidden in files:
            directory = root / top / run_id[:width]
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{'.' if hidden else ''}{run_id}{suffix}").touch()
        layout = _layout(root, suffixes, shard_width, names)
        got = _core.scan_states(layout, run_ids, LABELS)
        states, orphans = _states(layout, run_ids)
        assert got == (states, orphans)
        # scan_completed is the done half of the same scan.
        assert _core.scan_completed(layout, run_ids) == ([s == "done" for s in states], orphans)
        assert _core.scan_done(layout, run_ids) == ref.scan_done(
            layout.done_dir, run_ids, layout.done_suffix, shard_width
        )
        assert _core.list_done(layout) == ref.list_done(
            layout.done_dir, layout.done_suffix, shard_width
        )


def test_states_are_the_callers_labels_at_the_paths_file_layout_builds(tmp_path: Path) -> None:
    layout = FileLayout(tmp_path)
    ids = [f"{i:02x}" * 16 for i in (1, 2, 3, 4, 5)]
    done, failed, orphan, orphan_failed, _absent = ids
    for run_id in (done, orphan, orphan_failed):
        layout.done_marker(run_id).parent.mkdir(parents=True, exist_ok=True)
        layout.done_marker(run_id).touch()
    for run_id in (done, failed):
        layout.record(run_id).parent.mkdir(parents=True, exist_ok=True)
        layout.record(run_id).write_text("{}")
    for run_id in (failed, orphan_failed):
        layout.failed_marker(run_id).parent.mkdir(parents=True, exist_ok=True)
        layout.failed_marker(run_id).write_text("failed")
    labels = (StoredState.DONE, StoredState.FAILED, StoredState.ABSENT)
    states, orphans = _core.scan_states(layout.scan, ids, labels)
    assert states == [labels[0], labels[1], labels[2], labels[1], labels[2]]
    # The very objects given, not equal copies.
    assert all(any(s is label for label in labels) for s in states)
    assert orphans == [orphan, orphan_failed]
    assert layout.scan is layout.scan  # built once per layout


def test_a_done_marker_beats_an_old_failed_marker(tmp_path: Path) -> None:
    layout = FileLayout(tmp_path)
    run_id = "ab" * 16
    for path in (layout.done_marker(run_id), layout.record(run_id), layout.failed_marker(run_id)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert _core.scan_states(layout.scan, [run_id], LABELS) == (["done"], [])
    layout.record(run_id).unlink()
    assert _core.scan_states(layout.scan, [run_id], LABELS) == (["failed"], [run_id])


def test_the_layout_is_what_the_python_owner_says(tmp_path: Path) -> None:
    layout = FileLayout(tmp_path)
    scan = layout.scan
    run_id = "cd" * 16
    shard = Path(scan.done_dir) / run_id[: scan.shard_width]
    assert shard / f"{run_id}{scan.done_suffix}" == layout.done_marker(run_id)
    assert Path(scan.runs_dir) / run_id[:2] / f"{run_id}{scan.record_suffix}" == layout.record(
        run_id
    )
    assert Path(scan.failed_dir) / run_id[:2] / f"{run_id}{scan.failed_suffix}" == (
        layout.failed_marker(run_id)
    )
    assert repr(scan).startswith("ScanLayout(runs_dir=")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"done_suffix": ""}, "done_suffix = ''"),
        ({"record_suffix": "a/b"}, "record_suffix = 'a/b'"),
        ({"failed_suffix": "x\0"}, "failed_suffix = "),
        ({"shard_width": 0}, "shard_width = 0"),
        ({"shard_width": 33}, "shard_width = 33"),
    ],
)
def test_a_bad_layout_is_refused_naming_the_part(
    tmp_path: Path, change: dict[str, object], named: str
) -> None:
    parts: dict[str, object] = {
        "runs_dir": tmp_path / "runs",
        "done_dir": tmp_path / "done",
        "failed_dir": tmp_path / "failed",
        "record_suffix": ".json",
        "done_suffix": ".done",
        "failed_suffix": ".failed",
        "shard_width": 2,
    }
    with pytest.raises(StoreError, match="expected") as ei:
        _core.ScanLayout(**{**parts, **change})  # type: ignore[arg-type]
    assert str(ei.value).startswith(named)


def test_a_failed_root_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "failed").write_text("x")
    with pytest.raises(StoreError, match=r"failure markers root .* is not a directory"):
        _core.scan_states(FileLayout(tmp_path).scan, ["ab12"], LABELS)
    # scan_completed does not look at failed markers.
    assert _core.scan_completed(FileLayout(tmp_path).scan, ["ab12"]) == ([False], [])


def _record(run_id: str, task: int) -> str:
    return json.dumps(
        {
            "run_id": run_id,
            "experiment_id": "e:1",
            "status": "success",
            "context_fingerprint": "c",
            "params_fingerprint": "p",
            "seed_fingerprint": "s",
            "params": {"a": task},
            "task_index": task,
            "replicate": 0,
            "metrics": {},
        }
    )


def test_record_columns_follow_the_layout(tmp_path: Path) -> None:
    layout = _layout(tmp_path, (".rec", ".ok", ".bad"), 3, ("recs", "ok", "bad"))
    for task, run_id in enumerate(["abc1", "abd2"]):
        shard = tmp_path / "recs" / run_id[:3]
        shard.mkdir(parents=True, exist_ok=True)
        (shard / f"{run_id}.rec").write_text(_record(run_id, task))
        # Files of metalab's own layout are not this layout's records.
        (shard / f"{run_id}x.json").write_text(_record(f"{run_id}x", task))
    marker = tmp_path / "ok" / "abe" / "abe3.ok"
    marker.parent.mkdir(parents=True)
    marker.touch()
    for run_ids in (None, ["abc1", "abd2", "abe3"]):
        data = _core.load_record_columns(layout, run_ids)
        assert data["run_id"] == ["abc1", "abd2"]
        ((path, reason, corrupt),) = data["problems"]
        assert path == str(tmp_path / "recs" / "abe" / "abe3.rec") and not corrupt
        assert f"done marker {marker} says run abe3 finished" in reason


def test_the_record_statuses_are_those_of_run_state() -> None:
    assert tuple(state.value for state in RunState) == _core.RECORD_STATUSES
