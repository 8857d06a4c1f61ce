"""One Results whatever fed its column table: the FileStore's Rust scan or records in memory.

``load_results`` on a FileStore tabulates the record files in Rust; a store without a
columnar loader tabulates the records it loaded (``Results.from_records`` /
``columns_from_records``). Random records are written to a FileStore and loaded both
ways: every answer of the public API must be the same, and equal to the records' values.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab.records import RunRecord
from metalab.results import Results
from metalab.store.file import FileStore
from record_strategies import comparable, records


def _ids(results: Results) -> list[str]:
    return [run.run_id for run in results]


def _criteria(data: st.DataObject, runs: list[RunRecord]) -> dict[str, Any]:
    """A filter: a param, metric or record field of one of the runs (or of none)."""
    if not runs or data.draw(st.booleans()):
        return {data.draw(st.sampled_from(["a", "status", "replicate", "nothing"])): 1}
    run = data.draw(st.sampled_from(runs))
    fields = {**run.params, **run.metrics, "status": run.status.value, "replicate": 0}
    key = data.draw(st.sampled_from(sorted(fields)))
    return {key: fields[key]}


@given(records(), st.data())
def test_columns_and_records_give_the_same_results(
    runs: list[RunRecord], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "store")
        for record in runs:
            store.put_record(record)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mixed versions of "e" are said, by design
            fast = metalab.load_results(store)
        slow = Results.from_records(runs, store)
        given_runs = Results(list(fast), store)  # the public constructor from Run objects

        assert len(fast) == len(slow) == len(runs) and repr(fast) == repr(slow)
        assert _ids(fast) == _ids(slow) == _ids(given_runs)
        assert _ids(fast.successful) == _ids(slow.successful)
        assert _ids(fast.failed) == _ids(slow.failed)
        criteria = _criteria(data, runs)
        assert _ids(fast.filter(**criteria)) == _ids(slow.filter(**criteria)), criteria
        assert str(fast.table()) == str(slow.table()) == str(given_runs.table())
        assert comparable(fast.summary()) == comparable(slow.summary())
        assert comparable(fast.summary(["replicate"])) == comparable(slow.summary(["replicate"]))
        assert fast.error_groups() == slow.error_groups()
        assert comparable([r.params for r in fast]) == comparable([r.params for r in slow])
        pd.testing.assert_frame_equal(fast.to_dataframe(), slow.to_dataframe())
        pd.testing.assert_frame_equal(
            fast[1:].to_dataframe(include_params=False),
            slow[1:].to_dataframe(include_params=False),
        )

        # And the table holds the records' own values, in (experiment, task) order.
        ordered = sorted(runs, key=lambda r: (r.experiment_id, r.task_index))
        assert _ids(slow) == [r.run_id for r in ordered]
        for row, record in zip(slow.table(), ordered, strict=True):
            shown = {k: v for k, v in row.items() if k in record.params or k in record.metrics}
            assert comparable(shown) == comparable({**record.params, **record.metrics})
            assert row.get("error_type") == (record.error.type if record.error else None)
