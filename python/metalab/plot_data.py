"""Replicate aggregation behind :mod:`metalab.plots`: small tables that are then drawn.

Runs that share a configuration (every param, and the experiment version) and differ only
in replicate are aggregated with one pandas ``groupby`` over the results' DataFrame, so
300,000 runs cost a DataFrame, not a Python loop per run. :mod:`metalab.plot_draw` turns
the tables built here into matplotlib artists; neither module knows ``Results``.

Error bars (``errorbar=``): ``"sd"`` the sample standard deviation (n - 1), ``"sem"``
sd / sqrt(n), ``"ci95"`` 1.96 * sem (the normal approximation of a 95% confidence interval:
it is narrower than the t-based interval for few replicates, 2.2x at n = 3), ``None`` none.
The kind is written on the y axis label with the replicate count, e.g. ``mean ± sd (n=3)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metalab.errors import ExperimentError

if TYPE_CHECKING:
    import pandas as pd

    from metalab.records import RunRecord

__all__ = [
    "ERRORBARS",
    "KINDS",
    "MAX_FIGURES",
    "MAX_LINES",
    "MAX_PANELS",
    "Aggregated",
    "aggregate",
    "resolve",
    "series_table",
]

ERRORBARS = ("sd", "sem", "ci95")
KINDS = ("line", "scatter", "bar")
MAX_FIGURES = 24  # results.figures(): one PNG read and decoded per panel
MAX_LINES = 100  # plot_series(): configurations drawn; beyond that a plot is unreadable
MAX_PANELS = 24  # plot(col=...): subplots
_ERRORBAR_LABELS = {"sd": "sd", "sem": "sem", "ci95": "95% CI (1.96·sem)"}
_CI95_Z = 1.96


@dataclass(frozen=True)
class Aggregated:
    """One row per plotted point: keys, x, ``mean``, ``err`` (NaN when none), ``n``."""

    table: pd.DataFrame
    raw: pd.DataFrame  # the successful runs' rows, for ``points=True``
    x: str
    y: str
    hue: str | None
    col: str | None
    x_is_param: bool
    ylabel: str


def resolve(columns: Sequence[str], name: str, what: str) -> str | None:
    """The to_dataframe column a bare or full name means (exact, ``param_``, ``derived_``)."""
    if not isinstance(name, str):
        raise ExperimentError(f"{what} must be a column name (str), got {name!r}")
    for candidate in (name, f"param_{name}", f"derived_{name}"):
        if candidate in columns:
            return candidate
    return None


def _grouping(series: pd.Series) -> pd.Series:
    """``series`` as group keys: unhashable values (lists, dicts) by their repr."""
    if series.dtype != object:
        return series
    try:
        hash(tuple(series.head(1000)))
    except TypeError:
        return series.map(repr)
    return series


def _configuration(df: pd.DataFrame) -> list[str]:
    """The columns that make a configuration: every param, and the version."""
    params = [c for c in df.columns if c.startswith("param_")]
    return ["experiment_id", *params] if df["experiment_id"].nunique() > 1 else params


def _spread(std: pd.Series, n: pd.Series, errorbar: str | None) -> pd.Series:
    if errorbar == "sd":
        return std
    if errorbar == "sem":
        return std / n.pow(0.5)
    if errorbar == "ci95":
        return _CI95_Z * std / n.pow(0.5)
    return std * math.nan


def _numeric(df: pd.DataFrame, column: str, what: str) -> pd.Series:
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce")
    if values.notna().sum() == 0:
        raise ExperimentError(f"{what}={column!r} holds no numeric values to plot")
    return values


def _label(y: str, errorbar: str | None, n: pd.Series) -> str:
    low, high = int(n.min()), int(n.max())
    count = f"n={low}" if low == high else f"n={low}-{high}"
    spread = "mean" if errorbar is None else f"mean ± {_ERRORBAR_LABELS[errorbar]}"
    return f"{y} ({spread}, {count})"


def aggregate(
    df: pd.DataFrame, x: str, y: str, hue: str | None, col: str | None, errorbar: str | None
) -> Aggregated:
    """Mean, spread and count of ``y`` per (col, hue, x) over replicates, in one groupby.

    With a param ``x`` the other params must not vary inside a point (they would be
    averaged as if they were replicates); with a metric ``x`` each configuration is one
    point at its mean x (spread in ``xerr``).

    Raises:
        ExperimentError: y is not numeric, or a param that is not x, hue or col varies.
    """
    config = _configuration(df)
    keys = list(dict.fromkeys(k for k in (col, hue) if k is not None))
    data = df.assign(_y=_numeric(df, y, "y"))
    data = data[data["_y"].notna()]
    grouped = {c: _grouping(data[c]) for c in {*config, *keys, x}}
    x_is_param = x in config
    by = [*keys, x] if x_is_param else list(dict.fromkeys([*keys, *config]))
    if x_is_param:
        others = [c for c in config if c not in by]
        if others:
            varying = data.assign(**{c: grouped[c] for c in config}).groupby(by, dropna=False)
            counts = varying[others].nunique(dropna=False).max()
            mixed = [c.removeprefix("param_") for c in others if counts[c] > 1]
            if mixed:
                raise ExperimentError(
                    f"params {mixed} vary within the points of y={y!r} against x={x!r}; "
                    f"pass them as hue= or col=, or filter(...) the results first"
                )
    else:
        data = data.assign(_x=_numeric(data, x, "x"))
    frame = data.assign(**{c: grouped[c] for c in by})
    stats = frame.groupby(by, dropna=False, sort=True)["_y"].agg(["mean", "std", "count"])
    table = stats.rename(columns={"count": "n"})
    table["err"] = _spread(table["std"], table["n"], errorbar)
    if not x_is_param:
        xs = frame.groupby(by, dropna=False, sort=True)["_x"].agg(["mean", "std"])
        table["x_mean"] = xs["mean"]
        table["x_err"] = _spread(xs["std"], table["n"], errorbar)
    table = table.reset_index()
    if x_is_param:
        table["x_mean"] = table[x]
        table["x_err"] = math.nan
    return Aggregated(table, data, x, y, hue, col, x_is_param, _label(y, errorbar, table["n"]))


def series_table(
    records: Sequence[RunRecord],
    name: str,
    hue: str | None,
    errorbar: str | None,
    max_lines: int,
) -> tuple[pd.DataFrame, str | None, str]:
    """Per (configuration, step): mean, err, n of a stepped metric; its hue column, y label.

    Raises:
        ExperimentError: no record has the series, unknown hue, more than max_lines lines.
    """
    import numpy as np
    import pandas as pd

    having = [r for r in records if r.metric_series.get(name)]
    if not having:
        known = sorted({k for r in records for k in r.metric_series})
        raise ExperimentError(
            f"no successful run recorded a stepped metric {name!r}; these runs have {known}"
        )
    params = pd.DataFrame([r.params for r in having]).add_prefix("param_")
    params["experiment_id"] = [r.experiment_id for r in having]
    config = _configuration(params)
    hue_column = None if hue is None else resolve(list(params.columns), hue, "hue")
    if hue is not None and hue_column is None:
        raise ExperimentError(
            f"hue={hue!r} is not a param of these runs; available: {list(params.columns)}"
        )
    keys = pd.DataFrame({c: _grouping(params[c]) for c in config})
    ids = keys.groupby(config, dropna=False).ngroup() if config else pd.Series(0, keys.index)
    if ids.max() + 1 > max_lines:
        raise ExperimentError(
            f"{ids.max() + 1} configurations would draw more than max_lines={max_lines} "
            f"lines; filter(...) the results or raise max_lines"
        )
    lengths = [len(r.metric_series[name]) for r in having]
    pairs = np.concatenate(
        [np.asarray(r.metric_series[name], dtype=float).reshape(-1, 2) for r in having]
    )
    long = pd.DataFrame(
        {
            "run": np.repeat(np.arange(len(having)), lengths),
            "config": np.repeat(ids.to_numpy(), lengths),
            "step": pairs[:, 0],
            "value": pairs[:, 1],
        }
    )
    # A step logged twice in one run counts once (its last value, as run.metrics shows).
    long = long.drop_duplicates(["run", "step"], keep="last")
    stats = long.groupby(["config", "step"])["value"].agg(["mean", "std", "count"])
    table = stats.rename(columns={"count": "n"}).reset_index()
    table["err"] = _spread(table["std"], table["n"], errorbar)
    first = params.assign(config=ids.to_numpy()).drop_duplicates("config").set_index("config")
    varying = [c for c in config if keys[c].nunique(dropna=False) > 1]
    labels = {
        config_id: ", ".join(f"{c.removeprefix('param_')}={row[c]}" for c in varying) or name
        for config_id, row in first.iterrows()  # one row per configuration, <= max_lines
    }
    table["label"] = table["config"].map(labels)
    if hue_column is not None:
        table["hue"] = table["config"].map(first[hue_column])
    return table, hue_column, _label(name, errorbar, table["n"])
