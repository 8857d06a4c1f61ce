"""Plots of results (matplotlib, notebook-first): ``plot()``, ``plot_series()``, ``figures()``.

:class:`ResultsPlots` gives :class:`~metalab.results.Results` these methods. The
replicate aggregation lives in :mod:`metalab.plot_data` (pandas), the drawing in
:mod:`metalab.plot_draw`, the only module that imports matplotlib, and only through its
object API (``matplotlib.figure.Figure``): no pyplot global state, nothing pops up, safe
from threads. Error bars are explained in :mod:`metalab.plot_data`. This module imports
neither ``metalab.results`` nor ``metalab.plot_draw`` at load time: the results it plots
are anything shaped like :class:`PlotSource`, and the drawing loads on the first plot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from metalab.errors import ExperimentError
from metalab.html import PngImage
from metalab.plot_data import (
    ERRORBARS,
    KINDS,
    MAX_FIGURES,
    MAX_LINES,
    aggregate,
    resolve,
    series_table,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from metalab.records import RunRecord
    from metalab.run_view import Run

__all__ = ["PlotSource", "ResultsPlots"]


class PlotSource(Protocol):
    """What plotting needs of results (``metalab.Results`` has it all)."""

    @property
    def successful(self) -> PlotSource:
        """The runs whose status is success."""

    def to_dataframe(self, *, include_derived: bool = False) -> Any:
        """One row per run (see ``Results.to_dataframe``)."""

    def _successful_records(self) -> list[RunRecord]:
        """Records of the successful runs (read in one batch)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Run]: ...


def _require_matplotlib() -> Any:
    """:mod:`metalab.plot_draw`, or an ImportError that says how to install what is missing."""
    try:
        import pandas  # noqa: F401 - aggregation; checked first so the message is the same

        from metalab import plot_draw
    except ImportError as exc:
        raise ImportError(
            f"metalab plots need matplotlib (>= 3.7) and pandas ({exc}): "
            "pip install 'metalab[plot]'"
        ) from exc
    return plot_draw


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ExperimentError(f"{name}={value!r} is not supported; expected one of {allowed}")


def _frame(results: PlotSource, names: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The successful runs' DataFrame and the column each requested name resolves to.

    Derived metrics are read from the store only when a name needs them.

    Raises:
        ExperimentError: no successful run, or a name matches no column (all are listed).
    """
    ok = results.successful
    if len(ok) == 0:
        raise ExperimentError(f"nothing to plot: none of the {len(results)} runs succeeded")
    df = ok.to_dataframe()
    found = {what: resolve(list(df.columns), name, what) for what, name in names.items()}
    if any(column is None for column in found.values()):
        df = ok.to_dataframe(include_derived=True)
        found = {what: resolve(list(df.columns), name, what) for what, name in names.items()}
    for what, column in found.items():
        if column is None:
            available = [c for c in df.columns if c not in ("run_id", "error_message")]
            raise ExperimentError(
                f"{what}={names[what]!r} is not a column of these results; available: "
                f"{available} (params also by their bare name, derived metrics too)"
            )
    return df, cast("dict[str, str]", found)


class ResultsPlots:
    """``plot()``, ``plot_series()`` and ``figures()`` of results (a mixin of Results)."""

    def plot(
        self,
        x: str,
        y: str,
        hue: str | None = None,
        col: str | None = None,
        kind: str = "line",
        errorbar: str | None = "sd",
        points: bool = False,
        logx: bool = False,
        logy: bool = False,
        ax: Axes | None = None,
    ) -> Figure:
        """Plot ``y`` against ``x`` over the successful runs: the replicate mean with error bars.

        Names are ``to_dataframe()`` columns (``param_n``, ``pi_estimate``,
        ``derived_err``) or bare param and derived names (``n``, ``err``). Runs that
        share a configuration and differ only in replicate make one point: the mean,
        with the spread of ``errorbar`` (see :mod:`metalab.plot_data`); the y axis label
        says which, with the replicate count. Against a metric ``x`` each configuration
        is a point at its mean x, with x error bars too.

        Args:
            x, y: the columns to plot (y numeric).
            hue: one line (or bar series) per value of this column, with a legend.
            col: one subplot per value of this column (shared y axis, at most 24).
            kind: ``"line"``, ``"scatter"`` (markers only) or ``"bar"`` (x categorical).
            errorbar: ``"sd"``, ``"sem"``, ``"ci95"`` or ``None``.
            points: also draw every run's value (semi-transparent dots).
            logx, logy: logarithmic axes.
            ax: draw into this matplotlib Axes (not with ``col``).

        Returns:
            The matplotlib Figure (a notebook displays it).

        Raises:
            ExperimentError: an unknown column (the message lists the available ones),
                an unsupported kind/errorbar, no successful run, or params other than
                x/hue/col that vary within a point.
            ImportError: matplotlib is not installed (``pip install 'metalab[plot]'``).
        """
        _check_choice("kind", kind, KINDS)
        _check_choice("errorbar", errorbar, (*ERRORBARS, None))
        draw = _require_matplotlib()
        names = {"x": x, "y": y} | ({"hue": hue} if hue else {}) | ({"col": col} if col else {})
        df, found = _frame(cast("PlotSource", self), names)
        agg = aggregate(df, found["x"], found["y"], found.get("hue"), found.get("col"), errorbar)
        figure: Figure = draw.draw_plot(agg, kind, points, logx, logy, ax)
        return figure

    def plot_series(
        self,
        name: str,
        hue: str | None = None,
        errorbar: str | None = "sd",
        logx: bool = False,
        logy: bool = False,
        ax: Axes | None = None,
        max_lines: int = MAX_LINES,
    ) -> Figure:
        """Plot a stepped metric (``capture.metric(name, v, step=...)``) against its step.

        One line per configuration (runs differing only in replicate): the replicate
        mean at each step, with a band of ``errorbar`` (``"sd"``, ``"sem"``, ``"ci95"``
        or ``None``). With ``hue`` the lines are coloured by that param's value (one
        legend entry per value); otherwise each configuration has its own colour and
        its varying params as label.

        Raises:
            ExperimentError: no successful run recorded the series ``name``, an unknown
                ``hue`` param, an unsupported errorbar, or more than ``max_lines``
                configurations (filter the results first).
            ImportError: matplotlib is not installed.
        """
        _check_choice("errorbar", errorbar, (*ERRORBARS, None))
        draw = _require_matplotlib()
        records = cast("PlotSource", self)._successful_records()
        table, hue_column, ylabel = series_table(records, name, hue, errorbar, max_lines)
        figure: Figure = draw.draw_series(table, hue_column, ylabel, logx, logy, ax)
        return figure

    def figures(self, name: str, max_figures: int = MAX_FIGURES, ncols: int = 4) -> Figure:
        """A grid of the figure artifact ``name`` of the successful runs, titled by params.

        At most ``max_figures`` panels (24 by default: each is a PNG read and decoded),
        the first runs in order that stored the figure; the figure's title says when
        more runs were left out.

        Raises:
            ExperimentError: no successful run stored a figure ``name``, or a bound < 1.
            ImportError: matplotlib is not installed.
        """
        if max_figures < 1 or ncols < 1:
            raise ExperimentError(
                f"max_figures and ncols must be >= 1, got {max_figures} and {ncols}"
            )
        draw = _require_matplotlib()
        results = cast("PlotSource", self).successful
        shown: list[tuple[Run, PngImage]] = []
        more = False
        for run in results:
            if not any(a.name == name and a.kind == "png" for a in run.record.artifacts):
                continue
            if len(shown) == max_figures:
                more = True
                break
            shown.append((run, run.artifact(name)))
        if not shown:
            raise ExperimentError(
                f"no successful run of these {len(results)} stored a figure named {name!r}"
            )
        figure: Figure = draw.draw_grid(name, shown, ncols, more)
        return figure
