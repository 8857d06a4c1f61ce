"""Plots: the data actually drawn equals pandas computations on the same results.

A small pi-like sweep (3 sample sizes x 2 methods x 3 replicates, a stepped loss, a
figure per run) is plotted, and every check reads the artists back
(Line2D data, errorbar segments, bar heights, fill_between vertices, imshow images) and
compares them with ``to_dataframe()`` + ``groupby``. Both result kinds are covered: the
columnar results a FileStore loads and record-backed ``Results``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

import metalab
from metalab.errors import ExperimentError
from metalab.html import PngImage
from metalab.results import Results

SIZES = [100, 1000, 10000]
METHODS = ["square", "circle"]
REPLICATES = 3
STEPS = 5


@metalab.operation
def estimate(params: dict[str, Any], seeds: Any, capture: Any) -> None:
    import matplotlib.figure

    n, method = params["n_samples"], params["method"]
    rng = seeds.numpy()
    x, y = rng.random(n), rng.random(n)
    scale = 4.0 if method == "square" else 4.1  # two methods with different means
    pi_estimate = scale * float((x**2 + y**2 <= 1).mean())
    capture.metric("pi_estimate", pi_estimate)
    for step in range(STEPS):
        loss = scale * float(rng.random()) / (step + 1) + n / 1e4
        capture.metric("train_loss", loss, step=step)
    fig = matplotlib.figure.Figure(figsize=(2, 2), dpi=50)
    ax = fig.add_subplot(ylim=(0, 5))  # fixed limits: each run's image differs
    ax.plot([0, 1], [0, 10 * (pi_estimate - 3)], linewidth=4)
    capture.figure("curve", fig)
    capture.artifact("summary", {"n": n})


@metalab.operation
def sometimes_fails(params: dict[str, Any], capture: Any) -> None:
    if params["k"] == 2:
        raise ValueError("k=2 fails")
    capture.metric("score", params["k"] * 10.0)


def _experiment(op: Any, name: str, replicates: int, **grid: list[Any]) -> metalab.Experiment:
    return metalab.Experiment(
        name=name,
        version="1",
        context={},
        operation=op,
        params=metalab.grid(**grid),
        seeds=metalab.seeds(base=7, replicates=replicates),
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Results:
    store = tmp_path_factory.mktemp("plots") / "store"
    exp = _experiment(estimate, "pi", REPLICATES, n_samples=SIZES, method=METHODS)
    results = metalab.run(exp, store=store, progress=False).result()
    assert isinstance(results, Results) and len(results) == 18
    return results


@pytest.fixture(params=["columnar", "records"])
def results(request: pytest.FixtureRequest, sweep: Results) -> Results:
    if request.param == "columnar":
        return sweep
    records = [run.record for run in sweep]
    return Results.from_records(records, sweep.store)


def _frame(results: Results) -> pd.DataFrame:
    return results.successful.to_dataframe()


def _errorbars(ax: Any) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _half_lengths(container: ErrorbarContainer) -> tuple[np.ndarray, np.ndarray]:
    """(x, half height) of each vertical error bar of ``container``."""
    (bars,) = [c for c in container.lines[2] if isinstance(c, LineCollection)]
    segments = np.array(bars.get_segments())
    assert np.allclose(segments[:, 0, 0], segments[:, 1, 0])  # vertical
    return segments[:, 0, 0], np.abs(segments[:, 1, 1] - segments[:, 0, 1]) / 2


def test_line_plot_draws_replicate_means_with_sd_bars_per_hue(results: Results) -> None:
    fig = results.plot(x="n_samples", y="pi_estimate", hue="method")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    df = _frame(results)
    stats = df.groupby(["param_method", "param_n_samples"])["pi_estimate"].agg(["mean", "std"])
    containers = _errorbars(ax)
    assert [c.get_label() for c in containers] == sorted(METHODS)
    for container in containers:
        method = container.get_label()
        expected = stats.loc[method]
        line = container.lines[0]
        assert list(line.get_xdata()) == SIZES
        assert np.allclose(line.get_ydata(), expected["mean"].to_numpy())
        xs, half = _half_lengths(container)
        assert list(xs) == SIZES
        assert np.allclose(half, expected["std"].to_numpy())  # sample sd (ddof=1)
    assert ax.get_ylabel() == "pi_estimate (mean ± sd, n=3)"
    assert ax.get_xlabel() == "n_samples"
    assert ax.get_legend().get_title().get_text() == "method"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == sorted(METHODS)


@pytest.mark.parametrize(
    ("errorbar", "factor", "label"),
    [
        ("sem", 1.0, "sem"),
        ("ci95", 1.96, "95% CI (1.96·sem)"),
    ],
)
def test_sem_and_ci95_bars(results: Results, errorbar: str, factor: float, label: str) -> None:
    fig = results.plot(x="param_n_samples", y="pi_estimate", hue="method", errorbar=errorbar)
    (ax,) = fig.axes
    df = _frame(results)
    sem = df.groupby(["param_method", "param_n_samples"])["pi_estimate"].sem()
    for container in _errorbars(ax):
        _, half = _half_lengths(container)
        assert np.allclose(half, factor * sem.loc[container.get_label()].to_numpy())
    assert ax.get_ylabel() == f"pi_estimate (mean ± {label}, n=3)"


def test_no_errorbar_points_and_log_axes(results: Results) -> None:
    fig = results.plot(
        x="n_samples",
        y="pi_estimate",
        hue="method",
        kind="scatter",
        errorbar=None,
        points=True,
        logx=True,
        logy=True,
    )
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_ylabel() == "pi_estimate (mean, n=3)"
    for container in _errorbars(ax):
        assert container.has_yerr is False
        assert container.lines[0].get_linestyle() == "None"  # scatter: markers only
    df = _frame(results)
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == len(METHODS)
    drawn = np.concatenate([d.get_offsets() for d in dots])
    expected = df[["param_n_samples", "pi_estimate"]].to_numpy(dtype=float)
    assert sorted(map(tuple, drawn)) == sorted(map(tuple, expected))


def test_col_makes_one_subplot_per_value_with_shared_y(results: Results) -> None:
    fig = results.plot(x="n_samples", y="pi_estimate", col="method")
    axes = fig.axes
    assert [a.get_title() for a in axes] == [f"method={m}" for m in sorted(METHODS)]
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    df = _frame(results)
    for ax, method in zip(axes, sorted(METHODS), strict=True):
        (container,) = _errorbars(ax)
        mean = df[df.param_method == method].groupby("param_n_samples")["pi_estimate"].mean()
        assert np.allclose(container.lines[0].get_ydata(), mean.to_numpy())


def test_bar_heights_and_errors(results: Results) -> None:
    fig = results.plot(x="method", y="pi_estimate", hue="n_samples", kind="bar")
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == len(SIZES)
    stats = _frame(results).groupby(["param_n_samples", "param_method"])["pi_estimate"]
    mean, std = stats.mean(), stats.std()
    for size, container in zip(SIZES, bars, strict=True):
        heights = [patch.get_height() for patch in container.patches]
        assert np.allclose(heights, mean.loc[size].to_numpy())
        _, half = _half_lengths(container.errorbar)
        assert np.allclose(half, std.loc[size].to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == sorted(METHODS)


def test_derived_metric_by_bare_name(sweep: Results) -> None:
    def error(run: Any) -> dict[str, float]:
        return {"abs_error": abs(run.metrics["pi_estimate"] - np.pi)}

    sweep.compute_derived([error])
    fig = sweep.plot(x="n_samples", y="abs_error", col="method")
    df = sweep.successful.to_dataframe(include_derived=True)
    for ax, method in zip(fig.axes, sorted(METHODS), strict=True):
        mean = df[df.param_method == method].groupby("param_n_samples")["derived_abs_error"]
        (container,) = _errorbars(ax)
        assert np.allclose(container.lines[0].get_ydata(), mean.mean().to_numpy())
    assert fig.axes[0].get_ylabel().startswith("derived_abs_error (mean ± sd")


def test_metric_x_plots_each_configuration_at_its_means(results: Results) -> None:
    fig = results.plot(x="train_loss", y="pi_estimate", hue="method", kind="scatter")
    df = _frame(results)
    stats = df.groupby(["param_method", "param_n_samples"])[["train_loss", "pi_estimate"]]
    for container in _errorbars(fig.axes[0]):
        expected = stats.mean().loc[container.get_label()].sort_values("train_loss")
        line = container.lines[0]
        assert np.allclose(line.get_xdata(), expected["train_loss"].to_numpy())
        assert np.allclose(line.get_ydata(), expected["pi_estimate"].to_numpy())
        assert container.has_xerr  # x varies by replicate too


def test_unknown_column_is_named_with_the_available_ones(results: Results) -> None:
    with pytest.raises(ExperimentError, match="y='accuracy' is not a column") as err:
        results.plot(x="n_samples", y="accuracy")
    assert "pi_estimate" in str(err.value) and "param_n_samples" in str(err.value)
    with pytest.raises(ExperimentError, match="hue='colour'"):
        results.plot(x="n_samples", y="pi_estimate", hue="colour")
    with pytest.raises(ExperimentError, match="kind='pie'"):
        results.plot(x="n_samples", y="pi_estimate", kind="pie")
    with pytest.raises(ExperimentError, match="errorbar='iqr'"):
        results.plot(x="n_samples", y="pi_estimate", errorbar="iqr")


def test_params_varying_within_a_point_are_refused(results: Results) -> None:
    # Averaging both methods as if they were replicates would draw a wrong mean and sd.
    with pytest.raises(ExperimentError, match=r"params \['method'\] vary"):
        results.plot(x="n_samples", y="pi_estimate")
    fig = results.filter(method="square").plot(x="n_samples", y="pi_estimate")
    (container,) = _errorbars(fig.axes[0])
    df = _frame(results)
    mean = df[df.param_method == "square"].groupby("param_n_samples")["pi_estimate"].mean()
    assert np.allclose(container.lines[0].get_ydata(), mean.to_numpy())


def test_failed_runs_are_left_out_and_single_runs_have_no_bar(tmp_path: Path) -> None:
    exp = _experiment(sometimes_fails, "fails", 1, k=[1, 2, 3])
    results = metalab.run(exp, store=tmp_path / "s", progress=False).result()
    fig = results.plot(x="k", y="score")
    (container,) = _errorbars(fig.axes[0])
    assert list(container.lines[0].get_xdata()) == [1, 3]
    assert list(container.lines[0].get_ydata()) == [10.0, 30.0]
    assert fig.axes[0].get_ylabel() == "score (mean ± sd, n=1)"
    with pytest.raises(ExperimentError, match="none of the 1 runs succeeded"):
        results.filter(k=2).plot(x="k", y="score")


def test_plot_series_lines_and_bands(results: Results) -> None:
    fig = results.plot_series("train_loss", hue="method")
    (ax,) = fig.axes
    records = [run.record for run in results.successful]
    rows = [
        {"method": r.params["method"], "n": r.params["n_samples"], "step": s, "value": v}
        for r in records
        for s, v in r.metric_series["train_loss"]
    ]
    stats = pd.DataFrame(rows).groupby(["method", "n", "step"])["value"].agg(["mean", "std"])
    lines = ax.get_lines()
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(lines) == len(bands) == len(SIZES) * len(METHODS)  # one per configuration
    drawn = sorted(tuple(line.get_ydata()) for line in lines)
    expected = sorted(tuple(part["mean"]) for _, part in stats.groupby(level=[0, 1]))
    assert np.allclose(drawn, expected)
    for line in lines:
        assert list(line.get_xdata()) == list(range(STEPS))
    for band in bands:
        vertices = band.get_paths()[0].vertices
        upper = {(round(x, 9), round(y, 9)) for x, y in vertices}
        matches = [
            (method, n)
            for (method, n), part in stats.groupby(level=[0, 1])
            if all(
                (float(s), round(m + sd, 9)) in upper and (float(s), round(m - sd, 9)) in upper
                for s, m, sd in zip(range(STEPS), part["mean"], part["std"], strict=True)
            )
        ]
        assert len(matches) == 1  # the band is mean ± sd of exactly one configuration
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "method"
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted(METHODS)
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "train_loss (mean ± sd, n=3)"


def test_plot_series_errors(results: Results) -> None:
    with pytest.raises(ExperimentError, match=r"'val_loss'.*\['train_loss'\]"):
        results.plot_series("val_loss")
    with pytest.raises(ExperimentError, match="max_lines=4"):
        results.plot_series("train_loss", max_lines=4)
    with pytest.raises(ExperimentError, match="hue='lr' is not a param"):
        results.plot_series("train_loss", hue="lr")


def test_run_figure_is_a_displayable_png(results: Results) -> None:
    run = results[0]
    image = run.figure("curve")
    assert isinstance(image, PngImage)
    assert image._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.dimensions == (200, 200)  # 2 in at capture.figure's dpi=100
    with pytest.raises(KeyError, match=r"no figure 'loss' \(has: \['curve'\]\)"):
        run.figure("loss")
    with pytest.raises(ExperimentError, match=r"'summary'.*'json' artifact, not a figure"):
        run.figure("summary")


def test_figures_grid_shows_each_runs_png_titled_by_params(results: Results) -> None:
    from matplotlib.image import imread

    fig = results.figures("curve", max_figures=4, ncols=2)
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 4
    runs = list(results.successful)[:4]
    for ax, run in zip(shown, runs, strict=True):
        pixels = imread(io.BytesIO(run.figure("curve")), format="png")
        assert np.array_equal(ax.get_images()[0].get_array(), pixels)
        # Titled by what tells the shown runs apart: the first four share n_samples=100.
        method, replicate = run.params["method"], run.record.replicate
        assert ax.get_title() == f"method={method}, replicate {replicate}"
    assert "raise max_figures" in fig.get_suptitle()
    everything = results.figures("curve", max_figures=100)
    panels = [ax for ax in everything.axes if ax.get_images()]
    assert len(panels) == 18
    for ax, run in zip(panels, results.successful, strict=True):
        params = f"n_samples={run.params['n_samples']}, method={run.params['method']}"
        assert ax.get_title() == f"{params}, replicate {run.record.replicate}"
    assert "raise max_figures" not in everything.get_suptitle()
    with pytest.raises(ExperimentError, match="figure named 'nope'"):
        results.figures("nope")


def test_figures_render_as_png_without_pyplot(results: Results) -> None:
    fig = results.plot(x="n_samples", y="pi_estimate", hue="method")
    png = fig._repr_png_()  # type: ignore[attr-defined]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "matplotlib.pyplot" not in sys.modules or not fig.canvas.manager


def test_draws_into_a_given_axes(results: Results) -> None:
    target = Figure()
    ax = target.add_subplot()
    assert results.plot(x="n_samples", y="pi_estimate", hue="method", ax=ax) is target
    assert len(_errorbars(ax)) == 2
    with pytest.raises(ExperimentError, match="col= needs a figure"):
        results.plot(x="n_samples", y="pi_estimate", col="method", ax=ax)


def test_missing_matplotlib_says_how_to_install(
    results: Results, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "metalab.plot_draw", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package imports as
    monkeypatch.delattr(metalab, "plot_draw", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'metalab\[plot\]'"):
        results.plot(x="n_samples", y="pi_estimate", hue="method")
    with pytest.raises(ImportError, match="metalab plots need matplotlib"):
        results.figures("curve")
