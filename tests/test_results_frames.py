"""to_dataframe() builds numeric columns from native arrays the loader made in Rust.

``rust/src/index/frame.rs`` lays out each param/metric column as the array pandas would
infer from its list of values; ``to_dataframe()`` hands those arrays to pandas. These
tests check the arrays against a pure-Python reference (``tests/reference_index.py``),
the reference against pandas' own inference, and the DataFrame against the one built
from the lists, on generated records, through the results index and the record files.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metalab
from metalab.column_table import ColumnTable
from metalab.records import RunRecord, RunState
from metalab.store.file import FileStore
from record_strategies import records
from reference_index import frame_of

_NUMBERS = {
    "int": st.integers(-(2**63), 2**63 - 1),
    "small_int": st.integers(-(2**53) - 2, 2**53 + 2),
    "float": st.floats(),
    "bool": st.booleans(),
    "text": st.text(max_size=3),
}


@st.composite
def typed_records(draw: st.DrawFn) -> list[RunRecord]:
    """Records whose columns each hold mostly one kind of value, with gaps and strays."""
    count = draw(st.integers(1, 10))
    kinds = draw(st.dictionaries(st.sampled_from("abcd"), st.sampled_from(list(_NUMBERS))))
    out = []
    for task in range(count):
        row: dict[str, Any] = {}
        for key, kind in kinds.items():
            choice = draw(st.integers(0, 9))
            if choice == 0:
                continue  # the run lacks the key
            if choice == 1:
                row[key] = None
            elif choice == 2:
                row[key] = draw(_NUMBERS[draw(st.sampled_from(list(_NUMBERS)))])
            else:
                row[key] = draw(_NUMBERS[kind])
        params = {
            k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))
        }
        metrics = {k: v for k, v in row.items() if not isinstance(v, bool)}
        out.append(
            RunRecord(
                f"{task:032x}",
                "e:1",
                RunState.SUCCESS,
                "c",
                "p",
                "s",
                params,
                task,
                0,
                metrics=metrics,
            )
        )
    return out


def _column_values(data: dict[str, Any], section: str) -> list[tuple[str, list[Any]]]:
    return [(name, values) for name, values, _nulls, _first, _pos in data[section]]


def _check(store: FileStore) -> None:
    data, problems = store.load_columns()
    assert not problems
    for section, frames in (("params", "param_frames"), ("metrics", "metric_frames")):
        built = data[frames]
        assert len(built) == len(data[section])
        for (name, values), frame in zip(_column_values(data, section), built, strict=True):
            assert frame == frame_of(values), (section, name, values)
            if frame is not None:
                # The reference agrees with what pandas infers from the list.
                dtype, raw = frame
                inferred = pd.DataFrame({"c": values})["c"]
                assert inferred.dtype == np.dtype(dtype), (name, values, inferred.dtype)
                np.testing.assert_array_equal(np.frombuffer(raw, dtype), inferred.to_numpy())
    table = ColumnTable(data, store)
    rows = range(len(table))
    fast = pd.DataFrame(table.columns_out(rows, True, True, True, False, True))
    slow = pd.DataFrame(table.columns_out(rows, True, True, True, False, False))
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


@settings(max_examples=80, deadline=None)
@given(st.one_of(typed_records(), records()), st.booleans())
def test_native_columns_equal_pandas_inference(runs: list[RunRecord], indexed: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "store")
        for record in runs:
            store.put_record(record)
        if not indexed:
            for segment in store.layout.segments():
                segment.unlink()
        _check(store)


def test_to_dataframe_gets_numpy_columns(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for task in range(4):
        metrics: dict[str, Any] = {"score": task * 0.5, "steps": task}
        if task != 2:
            metrics["sparse"] = task
        store.put_record(
            RunRecord(
                f"{task:032x}",
                "e:1",
                RunState.SUCCESS,
                "c",
                "p",
                "s",
                {"n": task, "flag": task % 2 == 0, "name": f"r{task}"},
                task,
                0,
                metrics=metrics,
                started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                finished_at=dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
            )
        )
    results = metalab.load_results(str(tmp_path))
    table = results._table
    columns = table.columns_out(range(4), True, True, True, False, True)
    for name in ("param_n", "param_flag", "score", "steps", "sparse", "duration", "stale"):
        assert isinstance(columns[name], np.ndarray), name
    assert isinstance(columns["param_name"], list)
    frame = results.to_dataframe()
    assert frame["sparse"].dtype == np.float64 and math.isnan(frame["sparse"][2])
    assert frame["steps"].dtype == np.int64 and frame["param_flag"].dtype == bool
    # A selection builds its columns from values (its dtype may differ from the whole's).
    subset = results.filter(flag=False).to_dataframe()
    assert subset["sparse"].dtype == np.int64 and list(subset["sparse"]) == [1, 3]


@pytest.mark.parametrize("values", [[1, None], [True, False], [1.5, 2], [2**53 + 1]])
def test_reference_matches_pandas_on_examples(values: list[Any]) -> None:
    dtype, raw = frame_of(values) or ("", b"")
    inferred = pd.Series(values)
    assert inferred.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.frombuffer(raw, dtype), inferred.to_numpy())
