"""The incremental refresh of a run table: which runs changed, and the merged table.

Real DataFrames of the shape ``to_dataframe()`` gives; the merged table must equal the
table a full load would give (same rows, task order, categories kept).
"""

from __future__ import annotations

import pandas as pd
import pytest

from metalab.records import StoredState
from metalab.ui.refresh import as_categories, changed_runs, merge

D, F, A = StoredState.DONE, StoredState.FAILED, StoredState.ABSENT


def _frame(rows: list[tuple[str, str, float | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["run_id", "status", "loss"])
    frame["experiment_id"] = "e:1"
    frame["error_type"] = [None if s == "success" else "ValueError" for s in frame["status"]]
    return as_categories(frame)


@pytest.mark.parametrize(
    ("shown", "states", "changed"),
    [
        ([], [A, A, A], []),  # nothing finished yet
        ([("a", "success", 1.0)], [D, A, A], []),  # the table is current
        ([("a", "success", 1.0)], [D, D, F], ["b", "c"]),  # new runs
        ([("a", "failed", None)], [D, A, A], ["a"]),  # failed, re-run, now succeeded
        ([("a", "cancelled", None)], [F, A, A], []),  # cancelled counts as failed
        ([("a", "success", 1.0)], [F, A, A], ["a"]),  # re-run and failed this time
    ],
)
def test_changed_runs(
    shown: list[tuple[str, str, float | None]], states: list[StoredState], changed: list[str]
) -> None:
    assert changed_runs(_frame(shown), ["a", "b", "c"], states) == changed


def test_merge_replaces_adds_and_keeps_task_order() -> None:
    order = ["a", "b", "c", "d"]
    current = _frame([("a", "success", 1.0), ("c", "failed", None)])
    fresh = pd.DataFrame(
        {
            "run_id": ["d", "c", "b"],
            "status": ["success", "success", "failed"],
            "loss": [4.0, 3.0, None],
            "experiment_id": "e:1",
            "error_type": [None, None, "KeyError"],
            "new_metric": [1, 2, 3],
        }
    )
    merged = merge(current, fresh, order)
    assert merged["run_id"].tolist() == order
    assert merged["status"].astype(str).tolist() == ["success", "failed", "success", "success"]
    assert merged["loss"].tolist()[2:] == [3.0, 4.0]
    assert merged["new_metric"].isna().tolist() == [True, False, False, False]
    assert all(
        isinstance(merged[c].dtype, pd.CategoricalDtype)
        for c in ("status", "experiment_id", "error_type")
    )
    assert merge(current, fresh.iloc[:0], order) is current


def test_rows_of_other_launches_stay_after_the_latest_plan() -> None:
    current = _frame([("old", "success", 0.5), ("a", "success", 1.0)])
    fresh = _frame([("b", "success", 2.0)])
    assert merge(current, fresh, ["a", "b"])["run_id"].tolist() == ["a", "b", "old"]
