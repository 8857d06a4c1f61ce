"""plan_run_ids and the marker scans (scan_done, list_done, scan_states) vs the reference;
the scans follow the layout they are given; timing of the 300k path."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from metalab import _core
from metalab.errors import StoreError
from metalab.store.layout import (
    DONE_SUFFIX,
    FAILED_SUFFIX,
    RECORD_SUFFIX,
    SHARD_WIDTH,
)

hex_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)


def _layout(done_root: str | Path) -> _core.ScanLayout:
    """metalab's layout with its done markers under ``done_root`` (records and failed
    markers in siblings of it)."""
    done = Path(done_root)
    return _core.ScanLayout(
        runs_dir=done.parent / "runs",
        done_dir=done_root,
        failed_dir=done.parent / "failed",
        record_suffix=RECORD_SUFFIX,
        done_suffix=DONE_SUFFIX,
        failed_suffix=FAILED_SUFFIX,
        shard_width=SHARD_WIDTH,
    )


@given(st.text(), st.text(), st.lists(st.text(), max_size=6), st.lists(st.text(), max_size=4))
def test_plan_matches_reference(e: str, c: str, ps: list[str], ss: list[str]) -> None:
    got = _core.plan_run_ids(e, c, ps, ss)
    assert got == ref.plan_run_ids(e, c, ps, ss)
    assert len(got) == len(ps) * len(ss)
    for t, rid in enumerate(got):
        if t < 3:
            assert rid == _core.run_id(e, c, ps[t // len(ss)], ss[t % len(ss)])


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@given(st.lists(hex_ids, min_size=0, max_size=40, unique=True), st.data())
def test_scan_matches_reference(ids: list[str], data: st.DataObject) -> None:
    done = [i for i in ids if data.draw(st.booleans())]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "done"
        for rid in done:
            _touch(root / rid[:2] / f"{rid}.done")
        for rid in ids:
            if rid not in done and data.draw(st.booleans()):
                # Temp files and other junk next to the markers never count.
                _touch(root / rid[:2] / f".{rid}.done.tmp")
                _touch(root / rid[:2] / f"{rid}.done.partial")
        _touch(root / ".tmp" / "x.done")
        got = _core.scan_done(_layout(str(root)), ids)
        assert got == ref.scan_done(str(root), ids) == [i in done for i in ids]
        assert _core.list_done(_layout(str(root))) == ref.list_done(str(root)) == sorted(done)
        assert _core.scan_done(_layout(root), ids) == got  # os.PathLike accepted


def test_scan_missing_root_and_shards(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert _core.scan_done(_layout(str(missing)), ["ab12", "cd34"]) == [False, False]
    assert _core.list_done(_layout(str(missing))) == []
    _touch(tmp_path / "ab" / "ab12.done")
    assert _core.scan_done(_layout(str(tmp_path)), ["ab12", "cd34", "ab99"]) == [True, False, False]
    assert _core.scan_done(_layout(str(tmp_path)), []) == []


def test_marker_in_wrong_shard_ignored(tmp_path: Path) -> None:
    _touch(tmp_path / "cd" / "ab12.done")
    assert _core.scan_done(_layout(str(tmp_path)), ["ab12"]) == [False]
    assert _core.list_done(_layout(str(tmp_path))) == []


def test_root_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="file"):
        _core.scan_done(_layout(str(f)), ["ab12"])
    with pytest.raises(StoreError, match="not a directory"):
        _core.list_done(_layout(str(f)))


def test_300k_path_is_fast(tmp_path: Path) -> None:
    """GridCore(2000 x 50).fingerprints(0, 100000) + plan_run_ids for 300k tasks."""
    g = _core.GridCore(["lr", "layer"], [[i * 1e-4 for i in range(1, 2001)], list(range(50))])
    t0 = time.perf_counter()
    fps = g.fingerprints(0, 100_000)
    ids = _core.plan_run_ids("exp", "c" * 32, fps, [f"{r:032x}" for r in range(3)])
    elapsed = time.perf_counter() - t0
    assert len(ids) == 300_000 and len(set(ids)) == 300_000
    assert ids[4] == ref.run_id("exp", "c" * 32, fps[1], f"{1:032x}")
    # Target < 0.3 s in a release build on 2 cores; generous bound against noisy machines.
    assert elapsed < 1.5, elapsed

    for rid in ids[::50]:
        d = tmp_path / rid[:2]
        d.mkdir(exist_ok=True)
        (d / f"{rid}.done").touch()
    t0 = time.perf_counter()
    flags = _core.scan_done(_layout(str(tmp_path)), ids)
    scan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(1 for d in os.scandir(tmp_path) for _ in os.scandir(d.path))
    bare_s = time.perf_counter() - t0
    assert sum(flags) == n == len(ids[::50])
    assert flags == [i % 50 == 0 for i in range(len(ids))]
    assert scan_s < max(1.0, 5 * bare_s), (scan_s, bare_s)
