"""Live progress of an experiment: a rich bar when available, plain text otherwise."""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from metalab.errors import ExperimentError

__all__ = ["Progress", "ProgressSnapshot", "make_progress"]

_METRIC_SPEC = re.compile(r"^(?P<name>[^:]+)(?::(?P<fmt>.+))?$")


@dataclass
class ProgressSnapshot:
    """Counts shown by a progress display."""

    total: int
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    latest: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Runs no longer pending (any outcome)."""
        return self.completed + self.failed + self.cancelled


class Progress:
    """Progress display options.

    Args:
        title: heading of the display.
        display_metrics: metrics to show with their latest value, as ``"name"`` or
            ``"name:format_spec"`` (e.g. ``"loss:.4f"``, ``"accuracy:.2%"``).
        use_rich: force (True) or refuse (False) rich; ``None`` picks rich when installed.
        stream: where the plain-text display writes (default ``sys.stderr``).
        interval: seconds between plain-text lines.

    Raises:
        ExperimentError: a metric spec or format spec is invalid.
    """

    def __init__(
        self,
        title: str = "metalab",
        display_metrics: list[str] | tuple[str, ...] = (),
        use_rich: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 2.0,
    ) -> None:
        self.title = title
        self.metric_formats = [self._parse(spec) for spec in display_metrics]
        self.use_rich = use_rich
        self.stream = stream
        self.interval = interval
        self._lock = threading.Lock()
        self._snapshot = ProgressSnapshot(total=0)
        self._started = time.monotonic()
        self._renderer: Any = None
        self._last_line = 0.0

    @staticmethod
    def _parse(spec: str) -> tuple[str, str]:
        match = _METRIC_SPEC.fullmatch(spec) if isinstance(spec, str) else None
        if match is None:
            raise ExperimentError(f"display metric {spec!r} must look like 'name' or 'name:.4f'")
        fmt = match.group("fmt") or ""
        try:
            format(1.0, fmt)
        except (ValueError, TypeError) as exc:
            raise ExperimentError(
                f"display metric {spec!r} has an invalid format spec {fmt!r}: {exc}"
            ) from None
        return match.group("name"), fmt

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, total: int, skipped: int) -> None:
        """Begin displaying an experiment of ``total`` runs, ``skipped`` already done."""
        self._snapshot = ProgressSnapshot(total=total, completed=skipped, skipped=skipped)
        self._started = time.monotonic()
        want_rich = self.use_rich
        if want_rich is None or want_rich:
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress

                self._renderer = RichProgress(
                    TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[extra]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False,
                )
                self._task = self._renderer.add_task(
                    self.title, total=total, completed=skipped, extra=self._extra()
                )
                self._renderer.start()
            except ImportError:
                if want_rich:
                    raise
                self._renderer = None
        self._emit(force=True)

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Replace the counts (used by executors that poll, such as SLURM)."""
        with self._lock:
            snapshot.latest = snapshot.latest or self._snapshot.latest
            self._snapshot = snapshot
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
            snap.latest.update({k: v for k, v in metrics.items()})
        self._emit()

    def close(self) -> None:
        """Show the final counts and release the display."""
        self._emit(force=True)
        if self._renderer is not None:
            self._renderer.stop()
            self._renderer = None

    # -- rendering ------------------------------------------------------------------------
    def _extra(self) -> str:
        snap = self._snapshot
        parts = [f"ok {snap.completed - snap.skipped}", f"failed {snap.failed}",
                 f"skipped {snap.skipped}"]
        for name, fmt in self.metric_formats:
            if name in snap.latest:
                try:
                    parts.append(f"{name}={format(snap.latest[name], fmt)}")
                except (ValueError, TypeError):
                    parts.append(f"{name}={snap.latest[name]}")
        return " ".join(parts)

    def line(self) -> str:
        """The plain-text status line: counts, rate, ETA and chosen metrics."""
        snap = self._snapshot
        elapsed = max(time.monotonic() - self._started, 1e-9)
        done_now = snap.finished - snap.skipped
        rate = done_now / elapsed
        remaining = snap.total - snap.finished
        eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
        return (f"{self.title}: {snap.finished}/{snap.total} {self._extra()} "
                f"{rate:.1f} runs/s eta {eta}")

    def _emit(self, force: bool = False) -> None:
        if self._renderer is not None:
            snap = self._snapshot
            self._renderer.update(self._task, completed=snap.finished, extra=self._extra())
            return
        now = time.monotonic()
        if not force and now - self._last_line < self.interval:
            return
        self._last_line = now
        stream = self.stream or sys.stderr
        print(self.line(), file=stream, flush=True)


def make_progress(progress: bool | Progress | None) -> Progress | None:
    """Normalise the ``progress=`` argument of :func:`metalab.run`."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    raise ExperimentError(f"progress must be a bool or metalab.Progress, got {progress!r}")
