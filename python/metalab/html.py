"""HTML for notebooks: results, runs, statuses and progress in plain HTML and inline CSS.

Jupyter shows an object's ``_repr_html_``; :class:`~metalab.Results`, :class:`~metalab.Run`,
:class:`~metalab.RunHandle`, :class:`~metalab.RunStatus` and the notebook progress display
(:mod:`metalab.progress_notebook`) all render through this module, so they look alike.

Two rules hold for everything here:

* Every value that comes from a run or a store (parameters, metrics, error messages,
  artifact names, locators) is escaped: a parameter ``"<script>"`` is shown, never run.
  No script and no widget is emitted, so what a saved notebook keeps is what it showed.
* The size is bounded whatever the number of runs: a table shows its first
  :data:`MAX_ROWS` rows and :data:`MAX_COLUMNS` columns, a cell at most
  :data:`MAX_CELL_CHARS` characters, and says how much it left out. A result set of
  300,000 runs renders in the same few kilobytes as one of ten.
"""

from __future__ import annotations

import html
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from metalab.records import RunRecord

__all__ = [
    "MAX_CELL_CHARS",
    "MAX_COLUMNS",
    "MAX_ITEMS",
    "MAX_ROWS",
    "PngImage",
    "StatusCounts",
    "bar",
    "cell_text",
    "handle_html",
    "progress_html",
    "results_html",
    "run_html",
    "status_html",
]

MAX_ROWS = 10
"""Rows of a result table shown in a notebook (the rest are counted, not rendered)."""
MAX_COLUMNS = 20
"""Columns of a result table shown in a notebook."""
MAX_CELL_CHARS = 60
"""Characters of one table cell (longer values end with an ellipsis)."""
MAX_ITEMS = 50
"""Params, metrics or artifacts listed for one run."""
_MAX_TRACEBACK_CHARS = 8000  # the end of a traceback is the part that says what failed

# Status colours; "pending" is the bar's background (what is not yet finished).
_COLORS = {
    "success": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#ef6c00",
    "running": "#1565c0",
    "pending": "#e0e0e0",
}
_CELL = 'style="text-align:left;padding:2px 8px;vertical-align:top"'
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class StatusCounts(Protocol):
    """The counts :func:`status_html` draws (what :class:`metalab.RunStatus` holds)."""

    @property
    def total(self) -> int: ...
    @property
    def completed(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def cancelled(self) -> int: ...


def _plain(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def cell_text(value: object, limit: int = MAX_CELL_CHARS) -> str:
    """``value`` as escaped HTML text of at most ``limit`` characters (floats as ``.6g``)."""
    shown = _plain(value)
    if len(shown) > limit:
        shown = shown[: max(limit - 1, 0)] + "…"
    return html.escape(shown, quote=True)


def _status_cell(status: object) -> str:
    color = _COLORS.get(str(status), "inherit")
    return f'<span style="color:{color};font-weight:bold">{cell_text(status)}</span>'


def bar(segments: Iterable[tuple[str, int]], total: int, width_px: int = 240) -> str:
    """A horizontal bar of ``width_px`` with one coloured segment per ``(status, count)``.

    Each segment's width is its share of ``total``; what is left is the grey of pending
    runs. Plain ``div`` elements with inline styles: no script, nothing to load.
    """
    parts = []
    for status, count in segments:
        if count <= 0 or total <= 0:
            continue
        share = min(100.0, 100.0 * count / total)
        color = _COLORS.get(status, "#757575")
        parts.append(
            f'<div title="{html.escape(status)}: {count:,}" '
            f'style="width:{share:.2f}%;background:{color};height:100%"></div>'
        )
    return (
        f'<div class="metalab-bar" style="display:flex;width:{width_px}px;height:10px;'
        f"background:{_COLORS['pending']};border-radius:3px;overflow:hidden;"
        f'margin:4px 0">{"".join(parts)}</div>'
    )


def _rank(status: str) -> int:
    order = list(_COLORS)
    return order.index(status) if status in order else len(order)


def _counts_line(counts: Iterable[tuple[str, int]]) -> str:
    items = [
        f'<span style="color:{_COLORS.get(name, "inherit")}">{html.escape(name)}</span> {n:,}'
        for name, n in counts
    ]
    return " · ".join(items)


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; ``columns`` are escaped here, row cells must already be HTML."""
    head = "".join(f"<th {_CELL}>{cell_text(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td {_CELL}>{v}</td>" for v in row) + "</tr>" for row in rows)
    return (
        '<table style="border-collapse:collapse;font-size:0.9em">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def results_html(total: int, counts: Mapping[str, int], rows: Sequence[Mapping[str, Any]]) -> str:
    """A result set: its size, counts by status, a bar, and a table of ``rows``.

    Args:
        total: runs in the result set.
        counts: runs per status (``{"success": 7, "failed": 2}``).
        rows: the first rows of the table (at most :data:`MAX_ROWS` are drawn); each maps
            column name to value, as :meth:`metalab.Results.table` does.
    """
    shown = list(rows[:MAX_ROWS])
    columns = list(dict.fromkeys(key for row in shown for key in row))
    hidden_columns = max(len(columns) - MAX_COLUMNS, 0)
    columns = columns[:MAX_COLUMNS]
    cells = [
        [_status_cell(row.get(c)) if c == "status" else cell_text(row.get(c)) for c in columns]
        for row in shown
    ]
    ordered = sorted(counts.items(), key=lambda item: _rank(item[0]))
    parts = [
        '<div class="metalab-results">',
        f"<b>Results</b>: {total:,} runs — {_counts_line(ordered) or 'no runs'}",
        bar(ordered, total),
    ]
    if shown:
        parts.append(_table(columns, cells))
    notes = []
    if total > len(shown):
        notes.append(f"first {len(shown):,} of {total:,} runs shown")
    if hidden_columns:
        notes.append(f"{hidden_columns:,} more columns not shown")
    if notes:
        parts.append(f'<div style="color:#757575">{"; ".join(notes)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _mapping_table(values: Mapping[str, Any], what: str) -> str:
    items = list(values.items())
    if not items:
        return f'<div style="color:#757575">no {what}</div>'
    rows = [[cell_text(k), cell_text(v, 200)] for k, v in items[:MAX_ITEMS]]
    more = len(items) - MAX_ITEMS
    tail = f'<div style="color:#757575">{more:,} more {what} not shown</div>' if more > 0 else ""
    return _table(["name", "value"], rows) + tail


def run_html(record: RunRecord) -> str:
    """One run: its ID, status, params, metrics, error (with traceback) and artifacts."""
    duration = record.duration
    took = f" · {duration:.3g} s" if duration is not None else ""
    parts = [
        '<div class="metalab-run">',
        f"<b>Run</b> <code>{cell_text(record.run_id, 80)}</code> · "
        f"{cell_text(record.experiment_id, 120)} · replicate {record.replicate} · "
        f"{_status_cell(record.status.value)}{took}",
        "<div><b>params</b></div>",
        _mapping_table(record.params, "params"),
        "<div><b>metrics</b></div>",
        _mapping_table(record.metrics, "metrics"),
    ]
    error = record.error
    if error is not None:
        trace = error.traceback
        if len(trace) > _MAX_TRACEBACK_CHARS:
            trace = "…" + trace[-_MAX_TRACEBACK_CHARS:]
        parts.append(
            f'<div><b>error</b> <span style="color:{_COLORS["failed"]}">'
            f"{cell_text(error.type, 200)}: {cell_text(error.message, 2000)}</span></div>"
        )
        if trace:
            parts.append(
                "<details><summary>traceback</summary>"
                f'<pre style="white-space:pre-wrap">{html.escape(trace)}</pre></details>'
            )
    artifacts = record.artifacts
    if artifacts:
        rows = [
            [cell_text(a.name), cell_text(a.kind), f"{a.size:,}"] for a in artifacts[:MAX_ITEMS]
        ]
        parts += ["<div><b>artifacts</b></div>", _table(["name", "kind", "bytes"], rows)]
        if len(artifacts) > MAX_ITEMS:
            parts.append(f"<div>{len(artifacts) - MAX_ITEMS:,} more artifacts not shown</div>")
    parts.append("</div>")
    return "".join(parts)


def _status_segments(status: StatusCounts) -> list[tuple[str, int]]:
    return [
        ("success", status.completed),
        ("failed", status.failed),
        ("cancelled", status.cancelled),
        ("running", status.running),
    ]


def status_html(status: StatusCounts, heading: str = "RunStatus") -> str:
    """Counts of an experiment's runs and a bar of them (``heading`` in bold first)."""
    finished = status.completed + status.failed + status.cancelled
    pct = 100.0 * finished / status.total if status.total else 100.0
    counts = [
        ("completed", status.completed),
        ("failed", status.failed),
        ("running", status.running),
        ("pending", status.pending),
        ("skipped", status.skipped),
        ("cancelled", status.cancelled),
    ]
    text = " · ".join(f"{name} {n:,}" for name, n in counts)
    return (
        f'<div class="metalab-status"><b>{cell_text(heading, 200)}</b>: '
        f"{finished:,}/{status.total:,} finished ({pct:.0f}%)"
        f"{bar(_status_segments(status), status.total)}<div>{text}</div></div>"
    )


def handle_html(experiment_id: str, locator: str, status: StatusCounts) -> str:
    """A launched experiment: its ID, its store and its status."""
    return (
        f'<div class="metalab-handle"><b>RunHandle</b> {cell_text(experiment_id, 200)} '
        f'<span style="color:#757575">in {cell_text(locator, 200)}</span>'
        f"{status_html(status, 'status')}</div>"
    )


def progress_html(
    title: str,
    total: int,
    done: Sequence[tuple[str, int]],
    detail: str,
    final: bool,
) -> str:
    """The notebook progress display.

    Args:
        title: the display's title.
        total: runs of the experiment.
        done: finished runs per status, ``[("success", 7), ("failed", 1), ...]``.
        detail: the counts/rate/metrics text line (escaped here).
        final: the launch is over; the heading says so.
    """
    finished = sum(n for _, n in done)
    pct = 100.0 * finished / total if total else 100.0
    state = "done" if final else "running"
    return (
        f'<div class="metalab-progress" data-state="{state}"><b>{cell_text(title, 200)}</b> '
        f"{finished:,}/{total:,} ({pct:.0f}%) {state}{bar(done, total, 320)}"
        f'<div style="font-family:monospace">{html.escape(detail)}</div></div>'
    )


class PngImage(bytes):
    """The bytes of a PNG figure artifact, which a notebook displays as an image.

    It is ``bytes`` (equal to the stored data and usable wherever bytes are, as
    ``run.artifact()`` always returned for figures) with ``_repr_png_`` for IPython and
    a one-line ``repr`` instead of a screenful of escaped bytes.
    """

    name: str

    def __new__(cls, data: bytes, name: str = "") -> PngImage:
        image = super().__new__(cls, data)
        image.name = name
        return image

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """``(width, height)`` in pixels from the PNG header, ``None`` if it is not a PNG."""
        if self[:8] != _PNG_SIGNATURE or self[12:16] != b"IHDR" or len(self) < 24:
            return None
        width, height = struct.unpack(">II", self[16:24])
        return int(width), int(height)

    def _repr_png_(self) -> bytes:
        return bytes(self)

    def __repr__(self) -> str:
        dims = self.dimensions
        shape = f"{dims[0]}x{dims[1]} " if dims else ""
        return f"<PNG image {self.name!r}: {shape}{len(self):,} bytes>"
