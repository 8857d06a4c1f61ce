"""Plots of results (matplotlib, notebook-first): the methods and the replicate aggregation.

:class:`ResultsPlots` gives :class:`~metalab.results.Results` (and columnar results)
``plot()``, ``plot_series()`` and ``figures()``; :class:`RunFigures` gives
:class:`~metalab.results.Run` ``figure()``. Runs that share a configuration (every param,
and the experiment version) and differ only in replicate are aggregated with one pandas
``groupby`` over the results' column table, so 300,000 runs cost a DataFrame, not a Python
loop per run. The drawing lives in :mod:`metalab.plot_draw`, the only module that imports
matplotlib, and only through its object API (``matplotlib.figure.Figure``): no pyplot
global state, nothing pops up, safe from threads.

Error bars (``errorbar=``): ``"sd"`` the sample standard deviation (n - 1), ``"sem"``
sd / sqrt(n), ``"ci95"`` 1.96 * sem (the normal approximation of a 95% confidence interval:
it is narrower than the t-based interval for few replicates, 2.2x at n = 3), ``None`` none.
The kind is written on the y axis label with the replicate count, e.g. ``mean ± sd (n=3)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from metalab.errors import ExperimentError
from metalab.html import PngImage

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from metalab.records import RunRecord
    from metalab.results import Results, Run

__all__ = ["ERRORBARS", "KINDS", "MAX_FIGURES", "MAX_LINES", "ResultsPlots", "RunFigures"]

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


def resolve(columns: Sequence[str], name: str, what: str) -> str | None:
    """The to_dataframe column a bare or full name means (exact, ``param_``, ``derived_``)."""
    if not isinstance(name, str):
        raise ExperimentError(f"{what} must be a column name (str), got {name!r}")
    for candidate in (name, f"param_{name}", f"derived_{name}"):
        if candidate in columns:
            return candidate
    return None


def _frame(results: Results, names: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
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


class ResultsPlots:
    """``plot()``, ``plot_series()`` and ``figures()`` of results (a mixin of Results)."""

    def _successful_records(self) -> list[RunRecord]:
        """Records of the successful runs (columnar results read them in one batch)."""
        return [run.record for run in cast("Results", self).successful]

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
        with the spread of ``errorbar`` (see :mod:`metalab.plots`); the y axis label
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
        df, found = _frame(cast("Results", self), names)
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
        records = self._successful_records()
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
        results = cast("Results", self).successful
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


class RunFigures:
    """``figure()`` of a run (a mixin of Run)."""

    def figure(self, name: str) -> PngImage:
        """The stored figure ``name`` (``capture.figure``) as an image a notebook displays.

        A :class:`~metalab.html.PngImage`: the PNG ``bytes`` with ``_repr_png_``.

        Raises:
            KeyError: the run stored no figure ``name`` (the message lists its figures).
            ExperimentError: ``name`` is an artifact of another kind (use ``artifact()``).
        """
        run = cast("Run", self)
        infos = {a.name: a for a in run.record.artifacts}
        figures = sorted(n for n, a in infos.items() if a.kind == "png")
        if name not in infos:
            raise KeyError(f"run {run.run_id} has no figure {name!r} (has: {figures})")
        if infos[name].kind != "png":
            raise ExperimentError(
                f"artifact {name!r} of run {run.run_id} is a {infos[name].kind!r} artifact, "
                f"not a figure; load it with run.artifact({name!r})"
            )
        image: PngImage = run.artifact(name)
        return image
