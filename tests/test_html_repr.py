"""HTML representations for notebooks: escaping, bounded size, runs, statuses, figures."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.column_table import ColumnTable
from metalab.errors import ExperimentError
from metalab.html import MAX_COLUMNS, MAX_ROWS, PngImage, progress_html
from metalab.store.file import FileStore

HOSTILE = '<script>alert("x")</script>'


@metalab.operation
def hostile(params: dict[str, Any], capture: Any) -> None:
    capture.metric("<b>score</b>", params["i"])
    if params["i"] == 1:
        raise ValueError(f"bad value {params['tag']}")


@metalab.operation
def plotted(params: dict[str, Any], capture: Any) -> None:
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(3, 2), dpi=100)
    fig.add_subplot().plot([0, 1, 2], [0, params["k"], 0])
    capture.figure("curve", fig)
    capture.artifact("values", {"k": params["k"]})
    capture.metric("k", params["k"])


def _run(tmp_path: Path, op: Any, **grid: list[Any]) -> metalab.RunHandle:
    exp = metalab.Experiment(
        name="html",
        version="1",
        context={},
        operation=op,
        params=metalab.grid(**grid),
        seeds=metalab.seeds(base=3),
    )
    return metalab.run(exp, store=tmp_path / "store")


def _no_markup_from_values(page: str) -> None:
    assert "<script" not in page.lower() and "<b>score" not in page
    assert "onerror" not in page


def test_param_metric_and_error_values_are_escaped(tmp_path: Path) -> None:
    handle = _run(tmp_path, hostile, i=[0, 1], tag=[HOSTILE])
    results = handle.result()
    page = results._repr_html_()
    _no_markup_from_values(page)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;score&lt;/b&gt;" in page  # a metric name is a column header
    failed = results.failed[0]._repr_html_()
    _no_markup_from_values(failed)
    assert "ValueError" in failed and "bad value &lt;script&gt;" in failed


def test_results_html_counts_statuses_and_shows_params_metrics_status(tmp_path: Path) -> None:
    results = _run(tmp_path, hostile, i=[0, 1, 2], tag=["a"]).result()
    page = results._repr_html_()
    assert "3 runs" in page
    assert re.search(r">success</span> 2\b", page) and re.search(r">failed</span> 1\b", page)
    header = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert header[:2] == ["i", "tag"] and "status" in header
    assert page.count("<tr>") == 1 + 3  # header + one row per run
    assert 'title="success: 2" style="width:66.67%' in page


def test_results_html_is_bounded_for_300000_runs(tmp_path: Path) -> None:
    n = 300_000
    data: dict[str, Any] = {
        "run_id": [f"{i:032x}" for i in range(n)],
        "experiment_id": ["big:1"] * n,
        "status": ["failed" if i % 1000 == 7 else "success" for i in range(n)],
        "task_index": list(range(n)),
        "replicate": [0] * n,
        "duration_s": [0.5] * n,
        "started_at": [None] * n,
        # 30 params: more columns than a notebook table shows.
        "params": [(f"p{j}", list(range(n)), [], 0, j) for j in range(30)],
        "metrics": [("loss", [i / n for i in range(n)], [], 0, 0)],
    }
    table = ColumnTable(data, FileStore(tmp_path / "never-read"))
    results = metalab.Results.from_table(table, range(n))
    started = time.perf_counter()
    page = results._repr_html_()
    elapsed = time.perf_counter() - started
    # ~20 ms here; tabulating every row (then keeping ten) took 2.4 s.
    assert elapsed < 0.5, elapsed
    assert len(page) < 40_000, len(page)
    assert page.count("<tr>") == 1 + MAX_ROWS
    assert "300,000 runs" in page and f"first {MAX_ROWS} of 300,000 runs shown" in page
    assert ">success</span> 299,700" in page and ">failed</span> 300" in page
    header = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert len(header) == MAX_COLUMNS and "more columns not shown" in page
    started = time.perf_counter()
    successful = results.successful._repr_html_()  # a selection of rows, not a range
    assert time.perf_counter() - started < 0.5
    assert "299,700 runs" in successful and successful.count("<tr>") == 1 + MAX_ROWS
    # Counted and tabulated from columns: no run record was read or materialised.
    assert all(run is None for run in table._runs)


def test_record_based_results_are_bounded_too(tmp_path: Path) -> None:
    results = _run(tmp_path, hostile, i=[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], tag=["t"])
    loaded = results.result()
    plain = metalab.Results(list(loaded), loaded.store)
    page = plain._repr_html_()
    assert page.count("<tr>") == 1 + MAX_ROWS and "first 10 of 12 runs shown" in page


def test_run_html_has_params_metrics_status_error_and_artifacts(tmp_path: Path) -> None:
    results = _run(tmp_path, plotted, k=[2]).result()
    page = results[0]._repr_html_()
    assert results[0].run_id in page and "html:1" in page and ">success</span>" in page
    for section in ("params", "metrics", "artifacts"):
        assert f"<b>{section}</b>" in page
    assert re.search(r">curve</td><td[^>]*>png</td>", page)
    assert re.search(r">values</td><td[^>]*>json</td>", page)
    failed = _run(tmp_path / "f", hostile, i=[1], tag=["x"]).result()[0]._repr_html_()
    assert "<b>error</b>" in failed and "<summary>traceback</summary>" in failed
    assert "Traceback (most recent call last)" in failed and ", in hostile" in failed


def test_run_status_html_draws_a_bar_of_counts() -> None:
    status = metalab.RunStatus(
        total=10, completed=4, running=2, pending=3, failed=1, skipped=1, cancelled=0
    )
    page = status._repr_html_()
    assert "5/10 finished (50%)" in page
    assert 'title="success: 4" style="width:40.00%' in page
    assert 'title="failed: 1" style="width:10.00%' in page
    assert 'title="running: 2" style="width:20.00%' in page
    assert "pending 3" in page and "skipped 1" in page


def test_run_handle_html_names_experiment_store_and_status(tmp_path: Path) -> None:
    handle = _run(tmp_path, plotted, k=[1, 2])
    handle.result()
    page = handle._repr_html_()
    assert "<b>RunHandle</b> html:1" in page and (tmp_path / "store").as_uri() in page
    assert "2/2 finished (100%)" in page


def test_figure_artifact_is_bytes_that_display_as_png(tmp_path: Path) -> None:
    from IPython.core.formatters import DisplayFormatter

    results = _run(tmp_path, plotted, k=[3]).result()
    figure = results[0].artifact("curve")
    assert isinstance(figure, PngImage) and isinstance(figure, bytes)
    stored = (tmp_path / "store").glob("**/curve*.png")
    assert figure == next(stored).read_bytes()
    assert figure.dimensions == (300, 200)
    assert repr(figure) == f"<PNG image 'curve': 300x200 {len(figure):,} bytes>"
    data, _ = DisplayFormatter().format(figure)
    assert data["image/png"] == bytes(figure) and data["image/png"].startswith(b"\x89PNG")
    assert results[0].artifact("values") == {"k": 3}  # other kinds are unchanged


def test_progress_html_is_escaped_and_final_state_is_marked() -> None:
    page = progress_html(HOSTILE, 4, [("success", 3), ("failed", 1)], "a <b> c", True)
    assert "<script" not in page and "a &lt;b&gt; c" in page
    assert 'data-state="done"' in page and "4/4 (100%) done" in page


def test_notebook_progress_outside_ipython_is_refused() -> None:
    progress = metalab.Progress(notebook=True)
    with pytest.raises(ExperimentError, match="needs a running IPython"):
        progress.start(total=1, skipped=0)
    with pytest.raises(ExperimentError, match="notebook must be"):
        metalab.Progress(notebook="yes")  # type: ignore[arg-type]


def test_terminal_ipython_is_not_a_notebook() -> None:
    # A terminal IPython has a shell but no kernel: progress stays the terminal one.
    script = (
        "from IPython.terminal.interactiveshell import TerminalInteractiveShell\n"
        "TerminalInteractiveShell.instance()\n"
        "from metalab.progress_notebook import in_notebook\n"
        "import metalab, io\n"
        "stream = io.StringIO()\n"
        "p = metalab.Progress(title='t', use_rich=False)\n"
        "p.start(total=1, skipped=0); p.record_finished('success', {}); p.close()\n"
        "print(in_notebook())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert "t: 1/1 (100%)" in done.stderr


def test_plain_progress_unchanged_with_explicit_stream() -> None:
    stream = io.StringIO()
    progress = metalab.Progress(title="s", stream=stream, interval=0)
    progress.start(total=2, skipped=0)
    progress.record_finished("success", {})
    progress.record_finished("success", {})
    progress.close()
    assert stream.getvalue().splitlines()[-1].startswith("s: 2/2 (100%)")
