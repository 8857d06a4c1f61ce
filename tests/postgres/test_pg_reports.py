"""On PostgreSQL too: stale runs reported on resume and marked in results, the failure
report and error columns, the experiment filter and the mixed-versions warning."""

from __future__ import annotations

from typing import Any

import pytest

import metalab

pytestmark = pytest.mark.postgres


@metalab.operation
def before(params: dict[str, Any], capture: Any) -> None:
    capture.metric("y", params["x"])


@metalab.operation
def after(params: dict[str, Any], capture: Any) -> None:
    if params["x"] == 3:
        raise LookupError("no row 3")
    capture.metric("y", params["x"] * 2)


def _exp(op: Any, version: str = "1") -> metalab.Experiment:
    return metalab.Experiment(
        name="pgrep",
        version=version,
        context={},
        operation=op,
        params=metalab.grid(x=[1, 2, 3]),
        seeds=metalab.seeds(base=2),
    )


def test_stale_runs_failures_and_filters_on_postgres(
    pg_locator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    metalab.run(_exp(before), store=pg_locator).result()
    handle = metalab.run(_exp(after), store=pg_locator)
    results = handle.result()
    err = capsys.readouterr().err
    assert "3 of 3 finished runs of pgrep:1 are stale" in err
    assert [row["stale"] for row in results.table()] == [True, True, True]
    results = metalab.run(_exp(after), store=pg_locator, rerun="stale").result()
    err = capsys.readouterr().err
    assert "re-running 3 stale runs" in err
    assert "metalab: 1 of 3 runs of pgrep:1 did not succeed:" in err
    assert "  LookupError (1 run): no row 3  [first: run " in err
    frame = results.to_dataframe().set_index("param_x")
    assert frame.loc[3, "error_type"] == "LookupError" and not frame["stale"].any()
    metalab.run(_exp(before, "2"), store=pg_locator).result()
    with pytest.warns(UserWarning, match="mix 2 versions of pgrep"):
        mixed = metalab.load_results(pg_locator)
    assert len(mixed) == 6 and "experiment_id" in mixed.table()[0]
    only = metalab.load_results(pg_locator, experiment="pgrep:2")
    assert [r.metrics["y"] for r in only] == [1, 2, 3]
    for opened in (handle.store, mixed.store, only.store):
        opened.close()
