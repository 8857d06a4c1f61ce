"""load_results from PostgreSQL: columns parsed in Rust equal the record-by-record path."""

from __future__ import annotations

import math

import pytest

import metalab
from metalab.results import Results
from metalab.store import create_store

pytestmark = pytest.mark.postgres


def test_columnar_load_equals_record_load(pg_locator: str) -> None:
    @metalab.operation
    def op(params, seeds, capture):
        if params["x"] == 3:
            raise RuntimeError("x=3 fails")
        capture.metric("score", params["x"] * 1.5)
        capture.metric("maybe", math.nan if params["x"] == 1 else params["x"])
        if params["x"] % 2 == 0:
            capture.metric("even_only", 1)

    exp = metalab.Experiment(
        "pgcol", "1", {}, op, metalab.grid(x=[0, 1, 2, 3]), metalab.seeds(1, replicates=2)
    )
    handle = metalab.run(exp, store=pg_locator)
    handle.result()
    handle.store.close()
    fast = metalab.load_results(pg_locator)
    assert isinstance(fast, Results) and not fast.problems
    store = create_store(pg_locator)
    loaded = store.load_records()
    slow = Results.from_records(loaded.records, store, loaded.problems)
    assert len(fast) == len(slow) == 8
    a = fast.to_dataframe().sort_values("run_id").reset_index(drop=True)
    b = slow.to_dataframe().sort_values("run_id").reset_index(drop=True)
    assert sorted(a.columns) == sorted(b.columns)
    for column in a.columns:
        left, right = a[column].tolist(), b[column].tolist()
        for x, y in zip(left, right, strict=True):
            both_nan = all(isinstance(v, float) and math.isnan(v) for v in (x, y))
            assert both_nan or x == y, (column, x, y)
    assert len(fast.failed) == 2 and len(fast.filter(x=2)) == 2
    assert [r.params for r in fast.successful] == [r.params for r in slow.successful]
    only = metalab.load_results(pg_locator, experiment_id="other:1")
    assert len(only) == 0
    for opened in (fast.store, store, only.store):
        opened.close()
