"""Progress displays: format specs, counts, rate/ETA, plain text and rich, live updates."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

import metalab
from metalab.errors import ExperimentError
from metalab.progress import ProgressSnapshot, make_progress


@pytest.mark.parametrize("spec", ["loss:.4q", "loss:abc", ":.2f", "", 3])
def test_bad_metric_spec_fails_at_construction(spec: Any) -> None:
    with pytest.raises(ExperimentError, match="display metric"):
        metalab.Progress(display_metrics=[spec])


def test_bad_arguments() -> None:
    with pytest.raises(ExperimentError, match="list of strings"):
        metalab.Progress(display_metrics="loss:.4f")  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="interval"):
        metalab.Progress(interval=-1)
    with pytest.raises(ExperimentError, match="progress must be"):
        make_progress("yes")  # type: ignore[arg-type]


def test_make_progress() -> None:
    assert make_progress(None) is None and make_progress(False) is None
    assert isinstance(make_progress(True), metalab.Progress)
    shown = metalab.Progress(title="x")
    assert make_progress(shown) is shown


def test_plain_text_line_has_counts_rate_eta_and_metrics() -> None:
    stream = io.StringIO()
    progress = metalab.Progress(
        title="Training Models",
        display_metrics=["loss:.4f", "accuracy:.2%", "epochs:d", "name"],
        use_rich=False,
        stream=stream,
        interval=0,
    )
    progress.start(total=10, skipped=2)
    progress.record_finished("success", {"loss": 0.123456, "accuracy": 0.9512, "epochs": 3})
    progress.record_finished("failed", {"name": "x"})
    progress.record_finished("cancelled", {})
    line = progress.line()
    assert line.startswith("Training Models: 5/10 (50%)")
    for part in (
        "completed 1",
        "failed 1",
        "skipped 2",
        "cancelled 1",
        "loss=0.1235",
        "accuracy=95.12%",
        "epochs=3",
        "name=x",
        "runs/s",
        "eta",
    ):
        assert part in line, part
    progress.close()
    progress.close()
    assert stream.getvalue().count("\n") == 5


def test_plain_text_is_rate_limited() -> None:
    stream = io.StringIO()
    progress = metalab.Progress(use_rich=False, stream=stream, interval=3600)
    progress.start(total=100, skipped=0)
    for _ in range(50):
        progress.record_finished("success", {})
    progress.close()
    assert stream.getvalue().count("\n") == 2  # the first line and the final one


def test_metric_of_unexpected_type_is_still_shown() -> None:
    progress = metalab.Progress(display_metrics=["loss:.2f"], use_rich=False, stream=io.StringIO())
    progress.start(total=1, skipped=0)
    progress.record_finished("success", {"loss": "n/a"})
    assert "loss=n/a" in progress.line()


def test_update_replaces_counts_and_keeps_latest_metrics() -> None:
    progress = metalab.Progress(display_metrics=["m"], use_rich=False, stream=io.StringIO())
    progress.start(total=4, skipped=0)
    progress.record_finished("success", {"m": 1})
    progress.update(ProgressSnapshot(total=4, completed=3, failed=1))
    snap = progress.snapshot
    assert (snap.completed, snap.failed, snap.finished, snap.latest) == (3, 1, 4, {"m": 1})


def test_rich_renderer_draws_a_bar() -> None:
    pytest.importorskip("rich")
    stream = io.StringIO()
    progress = metalab.Progress(
        title="Rich Title", display_metrics=["loss:.3f"], use_rich=True, stream=stream
    )
    progress.start(total=3, skipped=1)
    progress.record_finished("success", {"loss": 0.5})
    progress.record_finished("success", {"loss": 0.25})
    progress.close()
    out = stream.getvalue()
    assert "Rich Title" in out and "3/3" in out and "loss=0.250" in out


def test_auto_mode_uses_plain_text_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = metalab.Progress(title="auto")
    progress.start(total=1, skipped=0)
    progress.record_finished("success", {})
    progress.close()
    assert "auto: 1/1" in capsys.readouterr().err


@metalab.operation
def gated(params: dict[str, Any], capture: Any) -> None:
    capture.metric("loss", 1.0 / (params["i"] + 1))
    capture.metric("accuracy", params["i"] / 10)


def test_progress_advances_as_runs_finish_not_when_polled(tmp_path: Path) -> None:
    seen: list[int] = []
    done = threading.Event()
    progress = metalab.Progress(
        title="Training Models",
        display_metrics=["loss:.4f", "accuracy:.2%"],
        use_rich=False,
        stream=io.StringIO(),
    )
    original = progress.record_finished

    def spy(status: str, metrics: dict[str, Any]) -> None:
        original(status, metrics)
        seen.append(progress.snapshot.completed)
        if len(seen) == 5:
            done.set()

    progress.record_finished = spy  # type: ignore[method-assign]
    exp = metalab.Experiment(
        name="prog",
        version="1",
        context={},
        operation=gated,
        params=metalab.grid(i=list(range(5))),
        seeds=metalab.seeds(base=0),
    )
    handle = metalab.run(exp, store=tmp_path / "s", progress=progress)
    # Nobody polls the handle: the callback alone must drive the display.
    assert done.wait(20)
    assert seen == [1, 2, 3, 4, 5]
    handle.result()
    assert "accuracy=40.00%" in progress.line()
