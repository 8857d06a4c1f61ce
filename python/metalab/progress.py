"""Live progress of an experiment: a notebook display, a rich bar, or plain text.

Executors that run tasks in this process tree (threads, process pools) report each run
as it finishes through :meth:`Progress.record_finished`, in completion order; executors
whose runs happen elsewhere (SLURM) poll the store and call :meth:`Progress.update`.

The plain-text display writes one self-contained line at most every ``interval`` seconds
(plus the final line), so it stays readable in CI logs and notebooks where a redrawn bar
would turn into noise.

In a Jupyter kernel the display is one notebook output updated in place
(:mod:`metalab.progress_notebook`): it needs no ipywidgets and its final state is kept in
the saved notebook.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from metalab.errors import ExperimentError
from metalab.html import progress_html

if TYPE_CHECKING:
    from metalab.progress_notebook import NotebookProgress

__all__ = ["Progress", "ProgressSnapshot", "make_progress"]

_METRIC_SPEC = re.compile(r"^(?P<name>[^:\s][^:]*?)(?::(?P<fmt>.*))?$")


@dataclass
class ProgressSnapshot:
    """Counts shown by a progress display.

    ``completed`` counts successful runs including ``skipped`` ones (done before), the
    same convention as :class:`metalab.RunStatus`.
    """

    total: int
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    latest: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    """Runs that did not succeed by reason kind (from ``RunStatus.reasons``), if known."""

    @property
    def finished(self) -> int:
        """Runs no longer pending (any outcome)."""
        return self.completed + self.failed + self.cancelled


def _check_format(spec: str, fmt: str) -> None:
    # A spec is valid if it formats a float or an int: ".2%" needs a number, "d" an int.
    for sample in (1.0, 1):
        try:
            format(sample, fmt)
        except (ValueError, TypeError):
            continue
        return
    raise ExperimentError(
        f"display metric {spec!r} has an invalid format spec {fmt!r}; "
        f"use a Python format spec such as '.4f', '.2%' or '.3e'"
    )


def _format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _rich_wanted() -> bool:
    # A live bar only makes sense on a terminal; in CI logs rich would render nothing
    # until the end, so the plain-text lines are used there instead. Notebooks get their
    # own display (rich's needs ipywidgets and is lost from the saved notebook).
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Progress display options and state.

    Args:
        title: heading of the display.
        display_metrics: metrics to show with their latest value, as ``"name"`` or
            ``"name:format_spec"`` (e.g. ``"loss:.4f"``, ``"accuracy:.2%"``).
        use_rich: force (True) or refuse (False) rich; ``None`` uses rich when it is
            installed and stderr is a terminal, plain text otherwise.
        stream: where the plain-text display writes (default ``sys.stderr``).
        interval: minimum seconds between two plain-text lines.
        notebook: show one HTML display updated in place in the current Jupyter cell.
            ``None`` does so inside a Jupyter kernel when no ``stream`` is given (then
            ``use_rich`` is not consulted); ``False`` never, ``True`` always (``start()`` raises
            ExperimentError outside IPython).

    Raises:
        ExperimentError: a metric spec or format spec is invalid, or ``interval`` is
            negative.
    """

    def __init__(
        self,
        title: str = "metalab",
        display_metrics: Sequence[str] = (),
        use_rich: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 2.0,
        notebook: bool | None = None,
    ) -> None:
        if isinstance(display_metrics, str):
            raise ExperimentError(
                f"display_metrics must be a list of strings, got the string {display_metrics!r}"
            )
        if not isinstance(interval, int | float) or interval < 0:
            raise ExperimentError(f"interval must be a non-negative number, got {interval!r}")
        self.title = str(title)
        self.metric_formats = [self._parse(spec) for spec in display_metrics]
        self.use_rich = use_rich
        self.stream = stream
        self.interval = float(interval)
        if notebook is not None and not isinstance(notebook, bool):
            raise ExperimentError(f"notebook must be True, False or None, got {notebook!r}")
        self.notebook = notebook
        self._notebook: NotebookProgress | None = None
        self._lock = threading.Lock()
        self._snapshot = ProgressSnapshot(total=0)
        self._started = time.monotonic()
        self._renderer: Any = None
        self._task: Any = None
        self._last_line = float("-inf")
        self._closed = False

    @staticmethod
    def _parse(spec: object) -> tuple[str, str]:
        match = _METRIC_SPEC.fullmatch(spec) if isinstance(spec, str) else None
        if match is None:
            raise ExperimentError(f"display metric {spec!r} must look like 'name' or 'name:.4f'")
        fmt = match.group("fmt") or ""
        assert isinstance(spec, str)
        _check_format(spec, fmt)
        return match.group("name").strip(), fmt

    def __repr__(self) -> str:
        metrics = [f"{n}:{f}" if f else n for n, f in self.metric_formats]
        return f"Progress(title={self.title!r}, display_metrics={metrics!r})"

    @property
    def snapshot(self) -> ProgressSnapshot:
        """A copy of the current counts and latest metric values."""
        with self._lock:
            snap = dataclasses.replace(self._snapshot)
            snap.latest = dict(self._snapshot.latest)
            return snap

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, total: int, skipped: int) -> None:
        """Begin displaying an experiment of ``total`` runs, ``skipped`` already done.

        Raises:
            ExperimentError: ``use_rich=True`` without rich, or ``notebook=True`` outside
                a running IPython.
        """
        with self._lock:
            self._snapshot = ProgressSnapshot(total=total, completed=skipped, skipped=skipped)
            self._started = time.monotonic()
            self._closed = False
            self._last_line = float("-inf")
        if self._notebook_wanted():
            from metalab.progress_notebook import NotebookProgress

            self._notebook = NotebookProgress(self._bundle)
            return
        want = self.use_rich if self.use_rich is not None else _rich_wanted()
        if want:
            self._start_rich(required=self.use_rich is True)
        self._emit(force=True)

    def _notebook_wanted(self) -> bool:
        if self.notebook is not None:
            return self.notebook
        from metalab.progress_notebook import in_notebook

        return self.stream is None and in_notebook()

    def _start_rich(self, required: bool) -> None:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
            from rich.text import Text
        except ImportError:
            if required:
                raise ExperimentError(
                    "Progress(use_rich=True) needs the 'rich' package: uv add metalab[rich]"
                ) from None
            return
        console = Console(file=self.stream) if self.stream is not None else None
        owner = self

        class _TwoLineProgress(RichProgress):
            # Counts and metrics get a line of their own so the bar keeps its width in
            # an 80-column terminal instead of being squeezed into ellipses.
            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                yield Text("  " + owner._extra(owner.snapshot), overflow="fold")

        renderer = _TwoLineProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        snap = self._snapshot
        self._task = renderer.add_task(
            self.title, total=snap.total, completed=snap.finished, rate=""
        )
        renderer.start()
        self._renderer = renderer

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Replace the counts (used by executors that poll, such as SLURM)."""
        with self._lock:
            latest = snapshot.latest or self._snapshot.latest
            self._snapshot = dataclasses.replace(snapshot, latest=dict(latest))
        self._emit()

    def record_finished(self, status: str, metrics: dict[str, Any]) -> None:
        """Count one finished run (called as each run finishes, in completion order)."""
        with self._lock:
            snap = self._snapshot
            if status == "success":
                snap.completed += 1
            elif status == "cancelled":
                snap.cancelled += 1
            else:
                snap.failed += 1
            if self.metric_formats and metrics:
                snap.latest.update(metrics)
        self._emit()

    def close(self) -> None:
        """Show the final counts and release the display (idempotent)."""
        if self._closed:
            return
        self._closed = True
        notebook, self._notebook = self._notebook, None
        if notebook is not None:
            notebook.close()
            return
        self._emit(force=True)
        if self._renderer is not None:
            self._renderer.stop()
            self._renderer = None

    # -- rendering ------------------------------------------------------------------------
    def _extra(self, snap: ProgressSnapshot) -> str:
        parts = [
            f"completed {snap.completed - snap.skipped}",
            f"failed {snap.failed}",
            f"skipped {snap.skipped}",
        ]
        if snap.reasons:
            # Why, in a word per kind: timeouts call for more time, exceptions for a fix.
            kinds = ", ".join(f"{kind} {count}" for kind, count in snap.reasons.items())
            parts[1] = f"failed {snap.failed} ({kinds})"
        if snap.cancelled:
            parts.append(f"cancelled {snap.cancelled}")
        for name, fmt in self.metric_formats:
            if name in snap.latest:
                value = snap.latest[name]
                try:
                    shown = format(value, fmt)
                except (ValueError, TypeError):
                    # A metric of another type than the spec expects is still shown.
                    shown = str(value)
                parts.append(f"{name}={shown}")
        return " ".join(parts)

    def _rate_eta(self, snap: ProgressSnapshot) -> tuple[float, float | None]:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = (snap.finished - snap.skipped) / elapsed
        remaining = max(snap.total - snap.finished, 0)
        eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
        return rate, eta

    def line(self) -> str:
        """The plain-text status line: counts, rate, ETA and chosen metrics."""
        snap = self.snapshot
        rate, eta = self._rate_eta(snap)
        pct = 100.0 * snap.finished / snap.total if snap.total else 100.0
        eta_text = _format_seconds(eta) if eta is not None else "?"
        return (
            f"{self.title}: {snap.finished}/{snap.total} ({pct:.0f}%) {self._extra(snap)} "
            f"| {rate:.1f} runs/s eta {eta_text}"
        )

    def _bundle(self, final: bool) -> dict[str, str]:
        """The notebook display's content: HTML with a plain-text line as its twin."""
        snap = self.snapshot
        rate, eta = self._rate_eta(snap)
        if final:
            elapsed = _format_seconds(time.monotonic() - self._started)
            tail = f"done in {elapsed} ({rate:.1f} runs/s)"
        else:
            tail = f"{rate:.1f} runs/s eta {_format_seconds(eta) if eta is not None else '?'}"
        detail = f"{self._extra(snap)} | {tail}"
        pct = 100.0 * snap.finished / snap.total if snap.total else 100.0
        done = [("success", snap.completed), ("failed", snap.failed), ("cancelled", snap.cancelled)]
        return {
            "text/plain": f"{self.title}: {snap.finished}/{snap.total} ({pct:.0f}%) {detail}",
            "text/html": progress_html(self.title, snap.total, done, detail, final),
        }

    def _emit(self, force: bool = False) -> None:
        notebook = self._notebook
        if notebook is not None:
            snap = self.snapshot
            # The run that completes the experiment is always drawn, even without a
            # result() call to close the display.
            notebook.show(force=force or snap.finished >= snap.total)
            return
        renderer = self._renderer
        if renderer is not None:
            snap = self.snapshot
            rate, _ = self._rate_eta(snap)
            renderer.update(
                self._task, total=snap.total, completed=snap.finished, rate=f"{rate:.1f}/s"
            )
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_line < self.interval:
                return
            self._last_line = now
        stream = self.stream if self.stream is not None else sys.stderr
        print(self.line(), file=stream, flush=True)


def make_progress(progress: bool | Progress | None) -> Progress | None:
    """Normalise the ``progress=`` argument of :func:`metalab.run`.

    Raises:
        ExperimentError: ``progress`` is neither a bool, ``None`` nor a Progress.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    raise ExperimentError(f"progress must be a bool or metalab.Progress, got {progress!r}")
