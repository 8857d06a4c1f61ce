"""Store capabilities across backends: one ``states()`` answer, transfers between any pair.

Every backend (FileStore, PostgresStore, FallbackStore) is driven through the same
protocol methods (``RunWriter`` to write, ``StatusIndex`` to ask, ``BundleReader`` /
``BundleWriter`` to copy), and must give the same answers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers_pg import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalab.records import RunState, StoredState
from metalab.store import FallbackStore, FileStore, Store, create_store
from metalab.store.capabilities import RunWriter, StatusIndex
from metalab.store.transfer import transfer

pytestmark = pytest.mark.postgres

# What happened to one run, as the sequence of writes an executor (or a user deleting
# files) would make, and what every store must then answer.
SITUATIONS: dict[str, tuple[list[str], StoredState]] = {
    "never ran": ([], StoredState.ABSENT),
    "record without marker (killed before marking)": (["record"], StoredState.ABSENT),
    "done": (["record", "success"], StoredState.DONE),
    "failed": (["record", "failed"], StoredState.FAILED),
    "cancelled": (["record", "cancelled"], StoredState.FAILED),
    "failed, then done on retry": (["record", "failed", "success"], StoredState.DONE),
    "done, then failed on a rerun": (["record", "success", "failed"], StoredState.FAILED),
    "done marker without record": (["success"], StoredState.ABSENT),
    "running marker writes nothing": (["record", "running"], StoredState.ABSENT),
}
_MARKS = {"success": RunState.SUCCESS, "failed": RunState.FAILED}
_MARKS |= {"cancelled": RunState.CANCELLED, "running": RunState.RUNNING}


def _apply(store: RunWriter, run_id: str, steps: list[str]) -> None:
    for step in steps:
        if step == "record":
            store.put_record(record(run_id))
        else:
            store.mark(run_id, _MARKS[step])


def _fresh_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def stores(pg_locator: str, tmp_path: Path) -> Iterator[dict[str, Store]]:
    """A FileStore, a PostgresStore and a FallbackStore (its own schema + directory)."""
    fallback_pg = pg_locator.replace("schema=", "schema=fb_", 1)
    made = {
        "file": FileStore(tmp_path / "file"),
        "postgres": create_store(pg_locator),
        "fallback": FallbackStore(fallback_pg, str(tmp_path / "fallback_dir")),
    }
    yield made
    made["fallback"].primary.drop_schema()  # type: ignore[attr-defined]
    for store in made.values():
        store.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.sampled_from(sorted(SITUATIONS)), min_size=1, max_size=8))
def test_states_agree_across_backends(stores: dict[str, Store], situations: list[str]) -> None:
    # Fresh run IDs per example: the stores persist across hypothesis examples.
    run_ids = [_fresh_id() for _ in situations]
    for store in stores.values():
        for run_id, situation in zip(run_ids, situations, strict=True):
            _apply(store, run_id, SITUATIONS[situation][0])
    expected = [SITUATIONS[s][1] for s in situations]
    answers: dict[str, list[StoredState]] = {}
    for name, store in stores.items():
        index: StatusIndex = store
        answers[name] = index.states(run_ids)
    assert answers == {name: expected for name in stores}, situations


def test_fallback_states_combine_both_stores(tmp_path: Path, pg_locator: str) -> None:
    primary, backup = create_store(pg_locator), FileStore(tmp_path / "backup")
    store = FallbackStore(primary, backup)
    ids = [_fresh_id() for _ in range(5)]
    _apply(backup, ids[0], ["record", "success"])  # failed over: only the fallback has it
    _apply(primary, ids[1], ["record", "failed"])
    _apply(backup, ids[1], ["record", "success"])  # retried during an outage: done wins
    _apply(primary, ids[2], ["record", "success"])
    _apply(backup, ids[3], ["record", "cancelled"])
    assert store.states(ids) == [
        StoredState.DONE,
        StoredState.DONE,
        StoredState.DONE,
        StoredState.FAILED,
        StoredState.ABSENT,
    ]
    # The primary alone still answers for itself only.
    assert primary.states(ids[:2]) == [StoredState.ABSENT, StoredState.FAILED]


# -- transfer between every pair of backends --------------------------------------------
def _populate(store: Store) -> dict[str, object]:
    """Write three runs (done with artifact + log + derived, failed, marker-less), a
    manifest and a blob through the public write path; return what must be copied."""
    ok, bad, unmarked = _fresh_id(), _fresh_id(), _fresh_id()
    sink = store.open_log(ok)
    sink.write_line("first line")
    sink.write_line("second line")
    sink.close()
    big = bytes(range(256)) * 40  # over the inline limit: a file under artifact_root
    info = store.put_artifact(ok, "weights", big, "numpy", ".npy", {})
    done = record(ok, task_index=0)
    done.artifacts.append(info)
    store.put_derived(ok, {"d": 1.5})
    store.put_record(done)
    store.mark(ok, RunState.SUCCESS)
    store.put_record(record(bad, task_index=1))
    store.mark(bad, RunState.FAILED)
    store.put_record(record(unmarked, task_index=2))
    store.put_manifest("e:1", {"experiment_id": "e:1", "submitted_at": "2026-01-01"})
    store.put_blob("spec-e:1", b"\x00spec bytes")
    return {"ids": [ok, bad, unmarked], "big": big, "info": info}


def _make(kind: str, tmp_path: Path, pg_locator: str, tag: str) -> Store:
    schema_locator = pg_locator.replace("schema=", f"schema={tag}_", 1)
    schema_locator += "&inline_limit=1024"
    if kind == "file":
        return FileStore(tmp_path / f"{tag}_file")
    if kind == "postgres":
        return create_store(schema_locator)
    return FallbackStore(schema_locator, str(tmp_path / f"{tag}_fallback_dir"))


KINDS = ["file", "postgres", "fallback"]


@pytest.fixture
def make_store(tmp_path: Path, pg_locator: str) -> Iterator[Callable[[str, str], Store]]:
    made: list[Store] = []

    def make(kind: str, tag: str) -> Store:
        store = _make(kind, tmp_path, pg_locator, tag)
        made.append(store)
        return store

    yield make
    for store in made:
        pg = store.primary if isinstance(store, FallbackStore) else store
        if not isinstance(pg, FileStore):
            pg.drop_schema()  # type: ignore[attr-defined]
        store.close()


@pytest.mark.parametrize("dst_kind", KINDS)
@pytest.mark.parametrize("src_kind", KINDS)
def test_transfer_between_every_pair_of_backends(
    make_store: Callable[[str, str], Store], src_kind: str, dst_kind: str
) -> None:
    source, target = make_store(src_kind, "src"), make_store(dst_kind, "dst")
    written = _populate(source)
    ids: list[str] = written["ids"]  # type: ignore[assignment]
    ok = ids[0]

    report = transfer(source, target)

    assert report.skipped == []
    assert (report.runs, report.records, report.artifacts) == (3, 3, 1)
    assert (report.manifests, report.blobs) == (1, 1)
    assert target.states(ids) == [StoredState.DONE, StoredState.FAILED, StoredState.ABSENT]
    assert target.states(ids) == source.states(ids)
    copied = {r.run_id: r.task_index for r in target.load_records().records}
    assert copied == {run_id: i for i, run_id in enumerate(ids)}
    assert target.read_log(ok) == "first line\nsecond line\n"
    assert target.get_artifact(ok, written["info"]) == written["big"]  # type: ignore[arg-type]
    assert target.get_derived(ids) == {ok: {"d": 1.5}}
    assert target.get_blob("spec-e:1") == b"\x00spec bytes"
    manifests = target.list_manifests("e:1")
    assert [m["submitted_at"] for m in manifests] == ["2026-01-01"]
    # Exact bytes: the bundle docs of both sides are identical, so a second transfer
    # back changes nothing either.
    src_bundles, _ = source.read_bundles(ids)
    dst_bundles, _ = target.read_bundles(ids)
    assert [(b.record_doc, b.marker, b.log, b.derived_doc) for b in dst_bundles] == [
        (b.record_doc, b.marker, b.log, b.derived_doc) for b in src_bundles
    ]
    again = transfer(source, target)
    assert again.runs == 3 and target.read_log(ok) == "first line\nsecond line\n"
    assert json.loads(dst_bundles[0].record_doc or "{}")["run_id"] == ok
