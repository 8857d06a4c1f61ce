"""PostgresStore.states(): the run IDs go as one newline-joined text, the answer comes
back as two texts (done, failed), with the same answer as one row per marker.

Run IDs holding a newline (or a single empty ID) cannot travel that way and take the row
query; both ways must agree with what was written, for every situation of a run and for
IDs that need quoting in a PostgreSQL array (quotes, braces, commas, backslashes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from helpers_pg import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalab.records import RunState, StoredState
from metalab.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

# Marker writes -> the state every way must answer (a success marker without its record
# vouches for nothing).
_WRITES: dict[str, tuple[bool, RunState | None, StoredState]] = {
    "never ran": (False, None, StoredState.ABSENT),
    "record only": (True, None, StoredState.ABSENT),
    "done": (True, RunState.SUCCESS, StoredState.DONE),
    "failed": (True, RunState.FAILED, StoredState.FAILED),
    "cancelled": (True, RunState.CANCELLED, StoredState.FAILED),
    "success marker, record gone": (False, RunState.SUCCESS, StoredState.ABSENT),
    "failed marker, no record": (False, RunState.FAILED, StoredState.FAILED),
}
_ODD = ['a"b', "{x}", "a,b", "back\\slash", "sp ace", "ünï", "NULL", ""]


@pytest.fixture
def pg_store(pg_locator: str) -> Iterator[PostgresStore]:
    store = PostgresStore.from_locator(pg_locator)
    yield store
    store.close()


def _write(store: PostgresStore, run_id: str, situation: str) -> StoredState:
    has_record, marker, expected = _WRITES[situation]
    if has_record:
        store.put_record(record(run_id))
    if marker is not None:
        store.mark(run_id, marker)
    return expected


def _by_rows(store: PostgresStore, ids: list[str]) -> list[StoredState]:
    """The answer of one row per marker (what states() does for IDs with a newline)."""
    return store.states([*ids, "x\ny"])[:-1]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(_WRITES)), st.sampled_from(["hex", *_ODD])),
        min_size=1,
        max_size=10,
    )
)
def test_both_ways_answer_what_was_written(
    pg_store: PostgresStore, runs: list[tuple[str, str]]
) -> None:
    # A fresh prefix per example (the schema lives across examples); odd names get one
    # too, so each example writes its own rows.
    prefix = uuid.uuid4().hex[:8]
    ids: list[str] = []
    expected: list[StoredState] = []
    for situation, kind in runs:
        run_id = uuid.uuid4().hex if kind == "hex" else f"{prefix}{kind}{len(ids)}"
        ids.append(run_id)
        expected.append(_write(pg_store, run_id, situation))
    ids.append(ids[0])  # asked twice: answered twice
    expected.append(expected[0])
    lines = "\n".join(ids)
    assert pg_store._states_of_lines(ids, lines) == expected
    assert pg_store.states(ids) == expected
    assert _by_rows(pg_store, ids) == expected


def test_ids_with_a_newline_or_one_empty_id_take_the_row_query(pg_store: PostgresStore) -> None:
    for run_id in ["a\nb", "\n", "trailing\n", ""]:
        pg_store.put_record(record(run_id))
        pg_store.mark(run_id, RunState.SUCCESS)
    assert pg_store.states(["a\nb", "\n", "trailing\n", "a", "b"]) == [
        StoredState.DONE,
        StoredState.DONE,
        StoredState.DONE,
        StoredState.ABSENT,
        StoredState.ABSENT,
    ]
    assert pg_store.states([""]) == [StoredState.DONE]
    assert pg_store.states(["", "nothing"]) == [StoredState.DONE, StoredState.ABSENT]
    assert pg_store.states([]) == []


def test_many_ids_in_one_text(pg_store: PostgresStore) -> None:
    ids = [f"{i:016x}" for i in range(5000)]
    for i, run_id in enumerate(ids[:300]):
        pg_store.put_record(record(run_id, task_index=i))
        pg_store.mark(run_id, RunState.FAILED if i % 3 == 0 else RunState.SUCCESS)
    got = pg_store.states(ids)
    assert got[:300] == [StoredState.FAILED if i % 3 == 0 else StoredState.DONE for i in range(300)]
    assert set(got[300:]) == {StoredState.ABSENT}
    assert got == _by_rows(pg_store, ids)
