"""The example notebook and notebook progress, executed in a real Jupyter kernel by nbclient.

The kernel is the project's venv (ipykernel, rich installed; ipywidgets deliberately not),
and the checks read the notebook as saved to disk: what a user who reopens it sees.

Cells of ``examples/notebook.ipynb`` carry tags naming what they must show: ``progress``
(exactly one progress display, in its final state), ``results``/``run``/``handle``/
``status`` (an HTML representation), ``figure`` (a PNG image) and ``slurm`` (needs the
cluster). Without SLURM the ``slurm`` cells are left out and their test skips, or fails
under ``METALAB_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from services import require_slurm

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"
RUNS_PER_SWEEP = 6  # the notebook's grid: 3 dampings x 2 frequencies


def _tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _kernel_env() -> dict[str, str]:
    # As for SLURM workers: PYTHONSAFEPATH would keep the kernel's cwd off sys.path.
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)
    return env


def _execute(nb: Any, workdir: Path) -> Any:
    """Run every cell in a fresh kernel started in ``workdir``; return the notebook as saved."""
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env=_kernel_env())
    saved = workdir / "executed.ipynb"
    nbformat.write(nb, saved)
    return nbformat.read(saved, as_version=4)


def _slurm_usable() -> bool:
    try:
        require_slurm()
    except (pytest.skip.Exception, pytest.fail.Exception):
        return False
    return True


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The example notebook, executed once for this module and read back from disk."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    if not _slurm_usable():
        nb.cells = [cell for cell in nb.cells if "slurm" not in _tags(cell)]
    return _execute(nb, tmp_path_factory.mktemp("notebook"))


def _cells(nb: Any, tag: str) -> list[Any]:
    return [cell for cell in nb.cells if tag in _tags(cell)]


def _html(output: Any) -> str:
    return str(output.get("data", {}).get("text/html", ""))


def _progress_outputs(cell: Any) -> list[Any]:
    return [out for out in cell.outputs if 'class="metalab-progress"' in _html(out)]


def _check_progress_cell(cell: Any, total: int) -> None:
    shown = _progress_outputs(cell)
    assert len(shown) == 1, cell.source
    html = _html(shown[0])
    text = shown[0]["data"]["text/plain"]
    assert 'data-state="done"' in html, html
    assert f"{total}/{total} (100%) done" in html
    assert f"{total}/{total} (100%) completed {total} failed 0 skipped 0" in text, text
    assert "done in" in text
    # No line flood and no warning: progress writes nothing to the cell's streams.
    assert not [out for out in cell.outputs if out.output_type == "stream"], cell.outputs


def _all_text(nb: Any) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


def test_kernel_has_no_ipywidgets() -> None:
    # The point of the exercise: rich is installed, ipywidgets is not.
    assert importlib.util.find_spec("ipywidgets") is None
    assert importlib.util.find_spec("rich") is not None


def test_progress_cells_show_one_display_in_its_final_state(executed: Any) -> None:
    cells = [cell for cell in _cells(executed, "progress") if "slurm" not in _tags(cell)]
    assert len(cells) == 2  # default executor and process pool
    for cell in cells:
        _check_progress_cell(cell, RUNS_PER_SWEEP)


def test_no_ipywidgets_warning_and_no_error_anywhere(executed: Any) -> None:
    text = _all_text(executed)
    assert "ipywidgets" not in text and "Warning" not in text
    assert all(out.output_type != "error" for c in executed.cells for out in c.get("outputs", []))


def test_results_run_and_handle_render_as_html(executed: Any) -> None:
    for tag, css_class in (
        ("results", "metalab-results"),
        ("run", "metalab-run"),
        ("handle", "metalab-handle"),
    ):
        cells = [c for c in _cells(executed, tag) if "slurm" not in _tags(c)]
        assert cells, tag
        for cell in cells:
            results = [out for out in cell.outputs if out.output_type == "execute_result"]
            assert len(results) == 1, (tag, cell.outputs)
            assert f'class="{css_class}"' in _html(results[0]), tag
    table = _html(_cells(executed, "results")[0].outputs[-1])
    assert f"{RUNS_PER_SWEEP} runs" in table and ">success</span> 6" in table
    assert ">damping</th>" in table and ">late_amplitude</th>" in table


def test_figure_artifact_is_an_image(executed: Any) -> None:
    (cell,) = _cells(executed, "figure")
    (output,) = [out for out in cell.outputs if out.output_type == "execute_result"]
    png = base64.b64decode(output["data"]["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert output["data"]["text/plain"].startswith("<PNG image 'curve': 400x250")


def test_slurm_cells(executed: Any) -> None:
    require_slurm()  # fails, not skips, under METALAB_REQUIRE_SERVICES=1
    slurm_cells = _cells(executed, "slurm")
    assert slurm_cells, "the SLURM cells were not executed"
    (progress,) = [cell for cell in slurm_cells if "progress" in _tags(cell)]
    _check_progress_cell(progress, RUNS_PER_SWEEP)
    table = _html(progress.outputs[-1])
    assert 'class="metalab-results"' in table and ">success</span> 6" in table
    (status,) = _cells(executed, "status")
    assert f"{RUNS_PER_SWEEP}/{RUNS_PER_SWEEP} finished (100%)" in _html(status.outputs[-1])


# -- progress in a kernel, without ipywidgets -------------------------------------------------

_PROGRESS_CELLS = [
    """
    import importlib.util, time, warnings
    import metalab
    warnings.simplefilter("always")  # any warning would reach the cell's output
    assert importlib.util.find_spec("ipywidgets") is None
    """,
    """
    @metalab.operation
    def slow(params, capture):
        time.sleep(0.03)
        capture.metric("loss", 1 / (params["i"] + 1))

    exp = metalab.Experiment(
        name="kernel_progress", version="1", context={}, operation=slow,
        params=metalab.grid(i=list(range(40))), seeds=metalab.seeds(base=1),
    )
    progress = metalab.Progress(title="sweep", display_metrics=["loss:.3f"])
    results = metalab.run(exp, store="store", progress=progress).result()
    """,
    """
    manual = metalab.Progress(title="by hand", interval=0)
    manual.start(total=50, skipped=0)
    for _ in range(50):
        manual.record_finished("success", {})
        time.sleep(0.01)
    manual.close()
    manual.close()
    """,
]


def test_progress_in_a_kernel_is_one_display_without_ipywidgets(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(textwrap.dedent(src)) for src in _PROGRESS_CELLS]
    )
    saved = _execute(nb, tmp_path)
    setup, sweep, manual = saved.cells
    assert setup.outputs == []
    for cell, total, title in ((sweep, 40, "sweep"), (manual, 50, "by hand")):
        # The only output is the one display: no warning, no plain-text line per update.
        assert len(cell.outputs) == 1, cell.outputs
        assert cell.outputs[0].output_type == "display_data"
        html = _html(cell.outputs[0])
        assert f"<b>{title}</b> {total}/{total} (100%) done" in html, html
    assert "loss=0.025" in sweep.outputs[0]["data"]["text/plain"]
    assert "ipywidgets" not in _all_text(saved)
