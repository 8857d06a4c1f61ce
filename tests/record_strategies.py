"""Hypothesis strategies for run records, and a NaN-aware equality helper.

Shared by the tests that feed the same records to a FileStore and to
:func:`metalab.store.columns.columns_from_records` (``test_store_columns``,
``test_results_sources``).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from hypothesis import strategies as st

from metalab.records import ErrorInfo, RunRecord, RunState

__all__ = ["comparable", "records"]

_KEYS = st.sampled_from(["a", "b", "lr", "n", "x y", "é"])
_PARAM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
)
_METRIC_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**53), 2**53),
    st.floats(),  # NaN and infinities are stored as strings and read back as floats
    st.text(max_size=5),
)
_WHEN = st.datetimes(
    min_value=dt.datetime(2020, 1, 1),
    max_value=dt.datetime(2030, 1, 1),
    timezones=st.just(dt.UTC),
)


@st.composite
def records(draw: st.DrawFn) -> list[RunRecord]:
    count = draw(st.integers(0, 12))
    # Distinct (experiment, task index) pairs: both loaders order rows by them, and the
    # order of ties is not part of the column format.
    tasks = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    records = []
    for at, task in enumerate(tasks):
        status = draw(st.sampled_from(list(RunState)))
        started = draw(st.none() | _WHEN)
        finished = (
            None
            if started is None
            else started + draw(st.timedeltas(dt.timedelta(0), dt.timedelta(days=9)))
        )
        records.append(
            RunRecord(
                run_id=f"{at:02x}{draw(st.integers(0, 2**64)):030x}",
                experiment_id=draw(st.sampled_from(["e:1", "e:2", "other:1"])),
                status=status,
                context_fingerprint="c",
                params_fingerprint="p",
                seed_fingerprint="s",
                params=draw(st.dictionaries(_KEYS, _PARAM_VALUES, max_size=4)),
                task_index=task,
                replicate=draw(st.integers(0, 3)),
                metrics=draw(st.dictionaries(_KEYS, _METRIC_VALUES, max_size=4)),
                started_at=started,
                finished_at=finished,
                error=None if status is RunState.SUCCESS else ErrorInfo("E", "boom"),
            )
        )
    return records


def comparable(value: Any) -> Any:
    """``value`` with NaN made equal to itself (and floats kept apart from equal ints)."""
    if isinstance(value, float):
        return ("nan",) if math.isnan(value) else ("float", value)
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value
