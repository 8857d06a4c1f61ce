"""The results index (issue 15 §3): index answers equal record answers, always.

Differential: a FileStore loaded through its segments (``FileStore.load_columns``) and
the same store's records read one by one (``_core.load_record_columns``, the loader
without an index) give identical columns and problems over random stores with failed
runs, reruns (the record rewritten: only the line of the current version counts),
deleted records, records edited in place and records written without a line. The
segment parser is checked against the Python oracle in ``tests/reference.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import metalab
from metalab import _core
from metalab.executors.process import ProcessExecutor
from metalab.records import ErrorInfo, RunRecord, RunState
from metalab.store.columns import record_summary
from metalab.store.file import FileStore
from metalab.store.index_segments import summary_line
from metalab.store.record_codec import (
    SUMMARY_KEYS,
    decode_record,
    encode_record_and_summary,
    record_document,
)
from record_strategies import comparable, records
from reference import ref_parse_index_segment
from store_changes import change_record


def _by_records(store: FileStore) -> tuple[Any, Any]:
    data = _core.load_record_columns(store.layout.scan, None, None)
    return comparable(data), data.pop("problems")


def _by_index(
    store: FileStore, experiment_id: str | None = None, run_ids: list[str] | None = None
) -> tuple[Any, Any]:
    data, problems = store.load_columns(experiment_id, run_ids)
    data["problems"] = [(p.location, p.reason) for p in problems]
    return comparable(data), problems


def _same_answers(
    store: FileStore, experiment_id: str | None = None, run_ids: list[str] | None = None
) -> dict[str, int]:
    indexed, _ = _by_index(store, experiment_id, run_ids)
    stats = dict(store.last_index_stats)
    expected = _core.load_record_columns(store.layout.scan, run_ids, experiment_id)
    expected["problems"] = [(path, reason) for path, reason, _ in expected["problems"]]
    assert indexed == comparable(expected)
    return stats


_CHANGES = st.sampled_from(["keep", "rerun", "rerun_failed", "delete", "edit", "unindexed"])


@settings(max_examples=60, deadline=None)
@given(records(), st.data())
def test_index_answers_equal_record_answers(runs: list[RunRecord], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "store")
        for record in runs:
            store.put_record(record)
            store.mark(record.run_id, record.status)
        for record in runs:
            change_record(store, record, data.draw(_CHANGES), data)
        stats = _same_answers(store)
        for experiment in ("e:1", "other:1", "absent:1"):
            _same_answers(store, experiment)
        # A plan's runs (RunHandle.result): a subset in any order, one never written.
        some = data.draw(st.permutations([r.run_id for r in runs]))[: len(runs) // 2]
        _same_answers(store, None, [*some, "f" * 32])
        # No segment at all (nothing written): the records answer alone.
        assert stats.get("bad_lines", 0) == 0
        assert stats.get("segments", 0) == len({r.experiment_id for r in runs})


def test_the_index_answers_and_records_are_not_read(tmp_path: Path) -> None:
    """A line matching the record file is used as is (the record file is not opened)."""
    store = FileStore(tmp_path)
    (record,) = _some_records(1)
    store.put_record(record)
    segment = store.layout.segments()[0]
    (entry,), bad = _core.parse_index_segment(segment.read_bytes())
    assert bad == 0 and entry[0] == record.run_id
    summary = json.loads(entry[4])
    assert "metric_series" not in summary and "provenance" not in summary
    # A forged line with the record's identity but another metric value answers.
    summary["metrics"] = {"m": 123456}
    stat = os.stat(store.layout.record(record.run_id))
    segment.write_bytes(summary_line(summary, stat))
    data, _ = store.load_columns()
    assert data["metrics"][0][1] == [123456]
    assert store.last_index_stats["indexed"] == 1
    assert store.last_index_stats["from_records"] == 0
    # The same for a plan's runs (RunHandle.result passes run_ids).
    data, _ = store.load_columns(run_ids=[record.run_id])
    assert data["metrics"][0][1] == [123456]
    assert store.last_index_stats["indexed"] == 1


def _some_records(n: int, experiment: str = "e:1") -> list[RunRecord]:
    return [
        RunRecord(
            run_id=f"{i:032x}",
            experiment_id=experiment,
            status=RunState.SUCCESS,
            context_fingerprint="c",
            params_fingerprint="p",
            seed_fingerprint="s",
            params={"i": i},
            task_index=i,
            replicate=0,
            metrics={"m": float(i)},
        )
        for i in range(n)
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=30), st.booleans()), max_size=6),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    st.integers(0, 60),
)
def test_segment_parser_matches_the_oracle(
    lines: list[tuple[bytes, bool]], flips: list[tuple[int, int]], cut: int
) -> None:
    """Valid, flipped, torn and garbage lines: Rust's parse equals the Python oracle's."""
    data = bytearray()
    stat = os.stat(__file__)
    for i, (junk, valid) in enumerate(lines):
        if valid:
            summary = {"run_id": f"{i:032x}", "x": junk.hex()}
            data += summary_line(summary, stat)
        else:
            data += junk + b"\n"
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    data = data[: max(0, len(data) - cut)] if cut % 3 == 0 else data
    assert _core.parse_index_segment(bytes(data)) == ref_parse_index_segment(bytes(data))


def test_one_segment_per_process_worker_answers_exact(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    handle = metalab.run(
        _experiment(40),
        store=str(store_dir),
        executor=ProcessExecutor(max_workers=2, mp_context="fork", chunk_size=4),
    )
    results = handle.result()
    writers = {str(r.record.provenance.pid) for r in results if r.record.provenance}
    store = FileStore(store_dir)
    segments = store.layout.segments("idx:1")
    # One segment per worker process that wrote, named after it (host.pid.scope-start).
    assert sorted(p.name.split(".")[1] for p in segments) == sorted(writers), segments
    assert sum(len(_core.parse_index_segment(p.read_bytes())[0]) for p in segments) == 40
    stats = _same_answers(store)
    assert stats["indexed"] == 40 and stats["from_records"] == 0
    assert [r.status.value for r in results].count("failed") == 4


@metalab.operation
def _op(params: dict[str, Any], capture: Any) -> None:
    if params["x"] % 10 == 3:
        raise ValueError(f"bad {params['x']}")
    capture.metric("y", params["x"] * 0.5)


def _experiment(n: int) -> metalab.Experiment:
    return metalab.Experiment(
        name="idx",
        version="1",
        context={},
        operation=_op,
        params=metalab.grid(x=list(range(n))),
        seeds=metalab.seeds(base=3, replicates=1),
    )


def test_reindex_cli_rebuilds_the_same_answers(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    metalab.run(_experiment(20), store=str(store_dir)).result()
    store = FileStore(store_dir)
    before = _by_index(store)[0]
    (old,) = store.layout.segments()
    cli = [sys.executable, "-m", "metalab", "store", "reindex", str(store_dir)]
    done = subprocess.run(cli, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "indexed 20 runs of 1 experiments" in done.stdout
    (new,) = store.layout.segments()
    assert new != old and new.name.startswith("reindex-")
    assert _by_index(store)[0] == before
    assert store.last_index_stats["indexed"] == 20
    missing = subprocess.run([*cli, "--experiment", "nope:1"], capture_output=True, text=True)
    assert missing.returncode == 5 and "no record of experiment 'nope:1'" in missing.stderr
    bad = subprocess.run([*cli, "--experiment", "../x"], capture_output=True, text=True)
    assert bad.returncode == 1 and "'../x'" in bad.stderr


@settings(max_examples=150, deadline=None)
@given(records(), st.booleans())
def test_record_and_summary_come_from_one_encoding(runs: list[RunRecord], failed: bool) -> None:
    """The record's bytes and its summary line's JSON come from one encoding (the summary
    keys lead the document); both say exactly what separate encodings said."""
    for record in runs:
        if failed:
            error = ErrorInfo(type="ValueError", message='bad "x"\n', traceback="tb\n")
            record = replace(record, error=error)
        data, summary = encode_record_and_summary(record)
        document = json.loads(data)
        assert document == json.loads(json.dumps(record_document(record), default=str))
        assert list(document)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
        expected = {k: document[k] for k in SUMMARY_KEYS}
        if isinstance(document.get("error"), dict):
            expected["error"] = {k: document["error"][k] for k in ("type", "message")}
        assert json.loads(summary) == expected
        # The summary built straight from a record (columns of in-memory runs) agrees.
        assert json.loads(json.dumps(record_summary(record), default=str)) == expected
        # Read back, the spliced bytes are the record a plain encoding stores.
        plain = json.dumps(record_document(record), allow_nan=False, default=str).encode()
        assert decode_record(data, "here", record.run_id) == decode_record(
            plain, "here", record.run_id
        )
