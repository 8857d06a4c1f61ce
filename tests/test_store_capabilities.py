"""Store capabilities without a server: FileStore states, default columns, layout names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab.errors import UnsafeNameError
from metalab.records import RunRecord, RunState, StoredState
from metalab.store import FallbackStore, FileLayout, FileStore
from metalab.store.bundle import ManifestDoc
from metalab.store.layout import (
    SHARD_WIDTH,
    manifest_name,
    parse_manifest_name,
    run_id_of,
    shard_of,
)
from metalab.store.transfer import transfer


def _record(run_id: str, task_index: int, experiment_id: str = "e:1") -> RunRecord:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=task_index)
    return RunRecord(
        run_id=run_id,
        experiment_id=experiment_id,
        status=RunState.SUCCESS,
        context_fingerprint="c" * 16,
        params_fingerprint="p" * 16,
        seed_fingerprint="s" * 16,
        params={"i": task_index},
        task_index=task_index,
        replicate=0,
        metrics={"loss": 1.0 / (task_index + 1)},
        started_at=now,
        finished_at=now,
    )


def _ids(n: int) -> list[str]:
    return [f"{i:02x}" + "0" * 30 for i in range(n)]


def test_filestore_states_in_one_call(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    done, failed, cancelled, orphan, bare, never = _ids(6)
    for run_id in (done, failed, cancelled, bare):
        store.put_record(_record(run_id, 0))
    store.mark(done, RunState.SUCCESS)
    store.mark(failed, RunState.FAILED)
    store.mark(cancelled, RunState.CANCELLED)
    store.mark(orphan, RunState.SUCCESS)  # a marker whose record never came
    assert store.states([never, done, failed, cancelled, orphan, bare, done]) == [
        StoredState.ABSENT,
        StoredState.DONE,
        StoredState.FAILED,
        StoredState.FAILED,
        StoredState.ABSENT,
        StoredState.ABSENT,
        StoredState.DONE,
    ]
    # A later success replaces the failure marker, and the answer follows.
    store.mark(failed, RunState.SUCCESS)
    assert store.states([failed]) == [StoredState.DONE]
    # The orphaned marker is reported when results are loaded, as before.
    problems = store.load_records().problems
    assert any("record missing" in p.reason and orphan in p.reason for p in problems)


def test_filestore_states_ignore_a_temporary_beside_a_failure_marker(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    [run_id] = _ids(1)
    marker = store.layout.failed_marker(run_id)
    marker.parent.mkdir(parents=True)
    (marker.parent / f".{marker.name}.tmp123").write_text("failed")
    assert store.states([run_id]) == [StoredState.ABSENT]


def test_every_store_has_columns_fallback_merges_both(tmp_path: Path) -> None:
    primary, backup = FileStore(tmp_path / "p"), FileStore(tmp_path / "b")
    ids = _ids(4)
    for i, run_id in enumerate(ids):
        (primary if i % 2 else backup).put_record(_record(run_id, i))
    both = FallbackStore(primary, backup)
    columns, problems = both.load_columns()
    assert problems == []
    assert columns["run_id"] == ids and columns["task_index"] == [0, 1, 2, 3]
    # The same table as one FileStore holding every record reads with its Rust scan.
    single = FileStore(tmp_path / "all")
    transfer(both, single)
    expected, _ = single.load_columns()
    assert columns == expected
    loaded = metalab.load_results(both)
    assert sorted(r.run_id for r in loaded) == ids


def test_transfer_from_a_fallback_takes_the_latest_attempt(tmp_path: Path) -> None:
    primary, backup = FileStore(tmp_path / "p"), FileStore(tmp_path / "b")
    [run_id] = _ids(1)
    primary.put_record(_record(run_id, 0))
    primary.mark(run_id, RunState.FAILED)
    later = _record(run_id, 5)  # finished 5 s later, during an outage
    backup.put_record(later)
    backup.mark(run_id, RunState.SUCCESS)
    target = FileStore(tmp_path / "t")
    report = transfer(FallbackStore(primary, backup), target)
    assert report.runs == 1 and report.skipped == []
    assert target.states([run_id]) == [StoredState.DONE]
    got = target.get_record(run_id)
    assert got is not None and got.task_index == 5


def test_shard_rule_is_the_layout_constant(tmp_path: Path) -> None:
    layout = FileLayout(tmp_path)
    [run_id] = _ids(1)
    shard = shard_of(run_id)
    assert len(shard) == SHARD_WIDTH and run_id.startswith(shard)
    for path in (layout.record(run_id), layout.done_marker(run_id), layout.derived(run_id)):
        assert path.parent.name == shard
    with pytest.raises(UnsafeNameError, match=r"'\.\./x'"):
        shard_of("../x")


_TOKEN = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True).filter(
    lambda t: ".." not in t
)


@given(_TOKEN, _TOKEN, _TOKEN)
def test_manifest_names_round_trip(name: str, version: str, stamp: str) -> None:
    experiment_id = f"{name}:{version}"
    file_name = manifest_name(experiment_id, stamp)
    # With the experiment named inside the document, the split is never ambiguous.
    assert parse_manifest_name(file_name, experiment_id) == (experiment_id, stamp)
    assert parse_manifest_name("." + file_name, experiment_id) is None
    assert parse_manifest_name(file_name + ".tmp", experiment_id) is None


def test_manifest_with_underscores_keeps_its_name_through_a_transfer(tmp_path: Path) -> None:
    source = FileStore(tmp_path / "s")
    doc = ManifestDoc("my_exp:1_0", "20260101T000000Z", '{"experiment_id": "my_exp:1_0"}')
    source.put_manifest_doc(doc)
    target = FileStore(tmp_path / "t")
    transfer(source, target)
    docs, refused = target.manifest_docs()
    assert docs == [doc] and refused == []
    assert target.layout.manifest(doc.experiment_id, doc.stamp).is_file()


def test_run_id_of_accepts_only_run_ids() -> None:
    [run_id] = _ids(1)
    assert run_id_of(run_id + ".done", ".done") == run_id
    assert run_id_of(run_id + ".json", ".done") is None
    assert run_id_of("..done", ".done") is None
    assert run_id_of("notes.json", ".json") is None
