"""Drawing of :mod:`metalab.plots`: the only metalab module that imports matplotlib.

It uses the object API alone: figures are :class:`PlotFigure` (a
``matplotlib.figure.Figure``) built directly, never through pyplot, so no global figure
manager keeps them alive, no window opens and threads can plot at once. Aggregation is
done before (:func:`metalab.plot_data.aggregate`); this module only turns its small tables
into artists.
"""

from __future__ import annotations

import io
import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import imread

from metalab.errors import ExperimentError
from metalab.plot_data import MAX_PANELS, Aggregated

if TYPE_CHECKING:
    import pandas as pd

    from metalab.html import PngImage
    from metalab.run_view import Run

__all__ = ["PlotFigure", "draw_grid", "draw_plot", "draw_series"]

_PER_ROW = 4  # subplots per row of a col= grid


class PlotFigure(Figure):
    """A Figure that a notebook shows as a PNG even when pyplot was never imported.

    IPython's inline backend registers its PNG formatter for ``Figure`` only once pyplot
    loads it; without that a bare Figure would display as ``<Figure size ...>``. When the
    formatter is registered it takes precedence, so the image is never shown twice.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def _palette() -> list[str]:
    colors: list[str] = rcParams["axes.prop_cycle"].by_key()["color"]
    return colors


def _order(values: pd.Series) -> list[Any]:
    """Distinct values, sorted when they compare (else in first-seen order)."""
    unique = list(values.drop_duplicates())
    try:
        return sorted(unique)
    except TypeError:
        return unique


def _is(values: pd.Series, value: Any) -> pd.Series:
    """Rows equal to ``value`` (a missing value matches missing ones)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return values.isna()
    same: pd.Series = values == value
    return same


def _shown(column: str) -> str:
    return column.removeprefix("param_")


def _panels(count: int, ax: Axes | None) -> tuple[Figure, list[Axes]]:
    if ax is not None:
        figure = ax.get_figure()
        if not isinstance(figure, Figure):
            raise ExperimentError(f"ax={ax!r} belongs to no matplotlib Figure")
        return figure, [ax]
    ncols = min(count, _PER_ROW)
    nrows = math.ceil(count / ncols)
    figure = PlotFigure(figsize=(4.5 * ncols, 3.5 * nrows), layout="constrained")
    grid = figure.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes: list[Axes] = list(grid.ravel())
    for spare in axes[count:]:
        spare.set_axis_off()
    return figure, axes[:count]


def _errors(values: pd.Series) -> np.ndarray[Any, Any] | None:
    array = values.to_numpy(dtype=float)
    return None if np.isnan(array).all() else array


def draw_plot(
    agg: Aggregated, kind: str, points: bool, logx: bool, logy: bool, ax: Axes | None
) -> Figure:
    """Draw :func:`~metalab.plot_data.aggregate`'s points: one panel per col, one series per hue.

    Raises:
        ExperimentError: ``ax`` with ``col``, too many panels, or a bar plot against a
            metric x or with ``logx``.
    """
    table, raw = agg.table, agg.raw
    panels = _order(table[agg.col]) if agg.col else [None]
    if agg.col and ax is not None:
        raise ExperimentError("ax= draws a single panel; col= needs a figure of its own")
    if len(panels) > MAX_PANELS:
        raise ExperimentError(
            f"col={_shown(agg.col or '')!r} has {len(panels)} values, more than "
            f"{MAX_PANELS} subplots; filter(...) the results or use hue="
        )
    if kind == "bar" and (logx or not agg.x_is_param):
        raise ExperimentError("kind='bar' needs a param x (categories) and no logx")
    figure, axes = _panels(len(panels), ax)
    hues = _order(table[agg.hue]) if agg.hue else [None]
    palette = _palette()
    categories = {v: i for i, v in enumerate(_order(table[agg.x]))} if kind == "bar" else {}
    handles: dict[str, Any] = {}
    for axis, panel in zip(axes, panels, strict=True):
        part, part_raw = table, raw
        if agg.col:
            part, part_raw = table[_is(table[agg.col], panel)], raw[_is(raw[agg.col], panel)]
            axis.set_title(f"{_shown(agg.col)}={panel}")
        for index, hue in enumerate(hues):
            sub, sub_raw = part, part_raw
            if agg.hue:
                sub, sub_raw = part[_is(part[agg.hue], hue)], part_raw[_is(part_raw[agg.hue], hue)]
            if sub.empty:
                continue
            color = palette[index % len(palette)]
            label = "_nolegend_" if hue is None else str(hue)
            offset = (index - (len(hues) - 1) / 2) * (0.8 / len(hues))
            sub = sub.sort_values("x_mean")
            if kind == "bar":
                where = sub[agg.x].map(categories).to_numpy(dtype=float) + offset
                artist: Any = axis.bar(
                    where,
                    sub["mean"],
                    0.8 / len(hues),
                    yerr=_errors(sub["err"]),
                    capsize=3,
                    color=color,
                    label=label,
                )
            else:
                artist = axis.errorbar(
                    sub["x_mean"],
                    sub["mean"],
                    yerr=_errors(sub["err"]),
                    xerr=_errors(sub["x_err"]),
                    fmt="o-" if kind == "line" else "o",
                    capsize=3,
                    color=color,
                    label=label,
                )
            handles.setdefault(label, artist)
            if points:
                xs = sub_raw[agg.x] if agg.x_is_param else sub_raw["_x"]
                if kind == "bar":
                    xs = xs.map(categories).astype(float) + offset
                axis.scatter(xs, sub_raw["_y"], s=12, alpha=0.4, color=color, linewidths=0)
        if kind == "bar":
            axis.set_xticks(range(len(categories)), [str(v) for v in categories])
        axis.set_xlabel(_shown(agg.x))
        if logx:
            axis.set_xscale("log")
        if logy:
            axis.set_yscale("log")
    for row_start in range(0, len(axes), _PER_ROW):
        axes[row_start].set_ylabel(agg.ylabel)
    if agg.hue:
        named = {k: v for k, v in handles.items() if k != "_nolegend_"}
        axes[0].legend(list(named.values()), list(named), title=_shown(agg.hue))
    return figure


def draw_series(
    table: pd.DataFrame,
    hue: str | None,
    ylabel: str,
    logx: bool,
    logy: bool,
    ax: Axes | None,
) -> Figure:
    """One line per configuration (replicate mean per step) with its spread as a band."""
    figure, (axis,) = _panels(1, ax)
    palette = _palette()
    hues: list[Hashable] = _order(table["hue"]) if hue else []
    labelled: set[str] = set()
    for index, (_config, part) in enumerate(table.groupby("config", sort=True)):
        part = part.sort_values("step")
        if hue:
            value = part["hue"].iloc[0]
            color = palette[hues.index(value) % len(palette)]
            label = str(value) if str(value) not in labelled else "_nolegend_"
            labelled.add(str(value))
        else:
            color = palette[index % len(palette)]
            label = str(part["label"].iloc[0])
        steps, mean, err = part["step"], part["mean"], part["err"]
        axis.plot(steps, mean, color=color, label=label)
        if err.notna().any():
            axis.fill_between(steps, mean - err, mean + err, color=color, alpha=0.2, linewidth=0)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    if logx:
        axis.set_xscale("log")
    if logy:
        axis.set_yscale("log")
    if hue or table["config"].nunique() > 1:
        axis.legend(title=_shown(hue) if hue else None)
    return figure


def _titles(runs: Sequence[Run]) -> list[str]:
    """Each run's params that differ among ``runs`` (and its replicate when that does)."""
    keys = list(dict.fromkeys(k for run in runs for k in run.params))
    varying = [k for k in keys if len({repr(run.params.get(k)) for run in runs}) > 1]
    replicates = len({run.record.replicate for run in runs}) > 1
    titles = []
    for run in runs:
        parts = [f"{k}={run.params.get(k)}" for k in varying]
        if replicates:
            parts.append(f"replicate {run.record.replicate}")
        titles.append(", ".join(parts) or run.run_id[:12])
    return titles


def draw_grid(name: str, shown: Sequence[tuple[Run, PngImage]], ncols: int, more: bool) -> Figure:
    """One panel per stored figure, titled by the params that tell the runs apart."""
    ncols = min(ncols, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    figure = PlotFigure(figsize=(3.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = list(figure.subplots(nrows, ncols, squeeze=False).ravel())
    titles = _titles([run for run, _ in shown])
    for axis, (_run, image), title in zip(axes, shown, titles, strict=False):
        axis.imshow(imread(io.BytesIO(image), format="png"))
        axis.set_title(title, fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    left_out = " (the first ones; raise max_figures= for more)" if more else ""
    figure.suptitle(f"{name}: {len(shown)} runs{left_out}")
    return figure
