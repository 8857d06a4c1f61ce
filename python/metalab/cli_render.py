"""Output of the inspection commands: rich on a terminal, aligned plain text otherwise, JSON.

Each command builds one JSON-ready payload; the functions here draw that same payload for
people, so the text and ``--json`` views can never disagree. Text coming from the store
(log lines, tracebacks, parameter values) is shown verbatim, never as rich markup, with
terminal control characters escaped; everything printed passes through the password
redaction of ``postgres_config``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import IO, Any

from metalab.store.postgres_config import redact

__all__ = [
    "PlainScreen",
    "RichScreen",
    "Screen",
    "epilog",
    "format_value",
    "json_document",
    "make_screen",
    "printable",
    "render_cancel",
    "render_logs",
    "render_ls",
    "render_show",
    "render_status",
    "status_line",
]


# Control characters a co-user could plant in a shared store (an experiment name, a log
# line) would drive the reader's terminal: they are shown as escapes instead.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\n\t"}


def printable(text: str) -> str:
    """``text`` as it may be shown: passwords redacted, terminal control characters escaped."""
    return redact(text).translate(_CONTROLS)


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``null`` (strict JSON has no NaN), and
    every string (keys included) has its passwords redacted.

    Redaction works on the strings, never on the serialised document, so masking a
    remembered password can never break the JSON (a password "875" inside a number).
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {redact(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def json_document(payload: dict[str, Any]) -> str:
    """The one JSON document a ``--json`` command prints (strict JSON, keys in order)."""
    return json.dumps(_clean(payload), indent=2, default=str, allow_nan=False)


def format_value(value: Any) -> str:
    """A parameter/metric value as a short, unambiguous cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, default=str)


class Screen(ABC):
    """Collects headings, key/value fields, tables and verbatim text, then prints them."""

    @abstractmethod
    def heading(self, text: str) -> None:
        """A section title."""

    @abstractmethod
    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Aligned ``key  value`` lines."""

    @abstractmethod
    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A table with a header row."""

    @abstractmethod
    def text(self, text: str) -> None:
        """Verbatim text (a log, a traceback, a message)."""

    @abstractmethod
    def show(self) -> None:
        """Print everything collected, then start empty."""


class PlainScreen(Screen):
    """Aligned plain text (no rich, not a terminal, or a pipe)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines: list[str] = []

    def heading(self, text: str) -> None:
        text = printable(text)
        if self.lines:
            self.lines.append("")
        self.lines += [text, "-" * len(text)]

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        pairs = [(printable(k), printable(v)) for k, v in pairs]
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            first, *rest = value.splitlines() or [""]
            self.lines.append(f"{key.ljust(width)}  {first}")
            self.lines += [" " * (width + 2) + line for line in rest]

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        cells = [[printable(c) for c in row] for row in [headers, *rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            self.lines.append(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )

    def text(self, text: str) -> None:
        self.lines += printable(text.rstrip("\n")).splitlines()

    def show(self) -> None:
        if self.lines:
            self.stream.write("\n".join(self.lines) + "\n")
            self.stream.flush()
        self.lines = []


class RichScreen(Screen):
    """Tables and headings drawn by rich (an optional dependency, extra ``rich``)."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console

        self.console = Console(file=stream, highlight=False)
        self.parts: list[Any] = []

    def heading(self, text: str) -> None:
        from rich.text import Text

        if self.parts:
            self.parts.append(Text(""))
        self.parts.append(Text(printable(text), style="bold cyan"))

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for key, value in pairs:
            grid.add_row(Text(printable(key)), Text(printable(value), style=_style_of(value)))
        self.parts.append(grid)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(*headers, header_style="bold")
        for row in rows:
            table.add_row(*(Text(printable(cell), style=_style_of(cell)) for cell in row))
        self.parts.append(table)

    def text(self, text: str) -> None:
        from rich.text import Text

        self.parts.append(Text(printable(text.rstrip("\n"))))

    def renderable(self) -> Any:
        """Everything collected as one rich renderable (for a live display)."""
        from rich.console import Group

        return Group(*self.parts)

    def show(self) -> None:
        for part in self.parts:
            self.console.print(part)
        self.parts = []


def _style_of(cell: str) -> str:
    return {"failed": "red", "cancelled": "yellow", "success": "green"}.get(cell, "")


def make_screen(stream: IO[str] | None = None) -> Screen:
    """Rich when ``stream`` is a terminal and rich is installed; aligned plain text otherwise."""
    out = stream if stream is not None else sys.stdout
    if out.isatty() and os.environ.get("TERM") != "dumb":
        try:
            return RichScreen(out)
        except ImportError:
            pass
    return PlainScreen(out)


# -- one renderer per command (input: the command's JSON payload) ------------------------
def render_ls(payload: dict[str, Any], screen: Screen) -> None:
    """``metalab ls``: one row per experiment."""
    experiments = payload["experiments"]
    screen.heading(f"{payload['store']}: {len(experiments)} experiment(s)")
    if not experiments:
        screen.text("no experiments (nothing was ever run into this store)")
        return
    rows = []
    for exp in experiments:
        counts = exp["counts"] or {}
        cells = [counts.get(k) for k in ("success", "failed", "pending")]
        rows.append(
            [
                exp["experiment_id"],
                str(exp["launches"]),
                format_value(exp["total"]),
                *(format_value(c) for c in cells),
                exp["last_activity"] or "-",
            ]
        )
    headers = ["experiment", "launches", "runs", "success", "failed", "pending", "last launch"]
    screen.table(headers, rows)


def status_line(payload: dict[str, Any]) -> str:
    """One line of counts (the plain ``--watch`` refresh)."""
    s = payload["status"]
    return (
        f"{payload['experiment_id']}: {s['completed']}/{s['total']} completed, "
        f"{s['running']} running, {s['pending']} pending, {s['failed']} failed, "
        f"{s['cancelled']} cancelled"
    )


def render_status(payload: dict[str, Any], screen: Screen) -> None:
    """``metalab status``: the reconnect view of one launch."""
    s = payload["status"]
    screen.heading(f"{payload['experiment_id']} in {payload['store']}")
    pairs = [
        ("executor", payload["executor"] or "-"),
        ("launched", payload["launched_at"] or "-"),
    ]
    if payload["slurm_job_ids"]:
        pairs.append(("SLURM jobs", ", ".join(payload["slurm_job_ids"])))
    pairs.append(("state", "complete" if payload["complete"] else "in progress"))
    screen.fields(pairs)
    keys = ("total", "completed", "running", "pending", "failed", "skipped", "cancelled")
    screen.table(list(keys), [[str(s[k]) for k in keys]])
    if payload["note"]:
        screen.text(payload["note"])
    if s["failed"]:
        shown = payload["failed_run_ids"][:5]
        rest = s["failed"] - len(shown)
        screen.text(
            "failed runs: "
            + ", ".join(run_id[:12] for run_id in shown)
            + (f" and {rest} more" if rest > 0 else "")
            + f"\nsee their logs: metalab logs {payload['store']} --failed "
            + f"--experiment {payload['experiment_id']}"
        )


def render_show(payload: dict[str, Any], screen: Screen) -> None:
    """``metalab show``: everything about one run."""
    record = payload["record"]
    screen.heading(f"run {payload['run_id']}")
    pairs = [("experiment", payload["experiment_id"] or "-"), ("status", payload["status"])]
    if record is not None:
        pairs += [
            ("task", f"{record['task_index']} (replicate {record['replicate']})"),
            ("started", record["started_at"] or "-"),
            ("finished", record["finished_at"] or "-"),
            ("duration", "-" if record["duration_s"] is None else f"{record['duration_s']:.3f} s"),
        ]
        provenance = record.get("provenance") or {}
        if provenance:
            pairs.append(("worker", f"{provenance.get('executor')} {provenance.get('worker_id')}"))
            pairs.append(("host", f"{provenance.get('host')} (pid {provenance.get('pid')})"))
    else:
        pairs.append(("record", "none yet: the run has not finished (queued, running or new)"))
    screen.fields(pairs)
    if record is not None:
        for title, values in (("params", record["params"]), ("metrics", record["metrics"])):
            screen.heading(title)
            if values:
                screen.fields([(k, format_value(v)) for k, v in values.items()])
            else:
                screen.text("(none)")
        error = record.get("error")
        if error:
            screen.heading("error")
            screen.text(f"{error['type']}: {error['message']}")
            if error.get("traceback"):
                screen.text(error["traceback"])
        screen.heading("artifacts")
        artifacts = record.get("artifacts") or []
        if artifacts:
            rows = [[a["name"], a["kind"], _size(a["size"]), a["file"]] for a in artifacts]
            screen.table(["name", "kind", "size", "file"], rows)
        else:
            screen.text("(none)")
    log = payload["log"]
    shown = len(log["tail"])
    screen.heading(f"log (last {shown} of {log['lines']} lines)" if shown else "log")
    screen.text("\n".join(log["tail"]) if shown else "(empty)")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def render_logs(payload: dict[str, Any], screen: Screen) -> None:
    """``metalab logs``: each log headed by its run ID (and error, when it failed)."""
    runs = payload["runs"]
    if not runs:
        screen.text(f"no failed runs in {payload['store']}")
        return
    for run in runs:
        head = f"== {run['run_id']}  {run['experiment_id'] or ''}  {run['status']}"
        if run["error"]:
            head += f"  {run['error']['type']}: {run['error']['message']}"
        screen.heading(head)
        cut = run["lines"] - len(run["log"])
        if cut > 0:
            screen.text(f"... ({cut} earlier lines not shown)")
        screen.text("\n".join(run["log"]) if run["log"] else "(empty log)")


def render_cancel(payload: dict[str, Any], screen: Screen) -> None:
    """``metalab cancel``: what was cancelled."""
    screen.text(payload["message"])


# -- --help epilogs ----------------------------------------------------------------------
_EXIT_CODES: dict[str, dict[int, str]] = {
    "ls": {0: "listed (even when runs failed: see status)"},
    "status": {
        0: "no failed run (complete or still going)",
        1: "some runs failed (or were cancelled)",
        2: "the experiment is unknown or ambiguous (candidates listed)",
        4: "the store answered but the status could not be computed (reason printed)",
    },
    "show": {
        0: "the run succeeded, or has not finished",
        1: "the run failed or was cancelled",
        2: "the run ID is malformed, unknown or ambiguous (candidates listed)",
    },
    "logs": {
        0: "no failed run found / the run did not fail",
        1: "failed runs found (--failed) / the run failed",
        2: "the run or experiment is unknown or ambiguous",
    },
    "cancel": {
        0: "cancelled, or nothing was left to cancel",
        2: "the experiment is unknown, ambiguous or was never launched",
        4: "cannot be cancelled from here (a local launch inside another process), "
        "or scancel failed",
    },
}
_COMMON_CODES = {
    2: "usage error or no store at that path",
    3: "the store cannot be reached",
    130: "interrupted (Ctrl-C)",
}


def epilog(command: str) -> str:
    """The exit codes of ``command`` (shared ones merged in), then where JSON keys are."""
    codes = dict(_COMMON_CODES)
    for code, text in _EXIT_CODES[command].items():
        codes[code] = f"{codes[code]}; or {text}" if code in codes else text
    lines = [
        textwrap.fill(codes[code], 78, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code in sorted(codes)
    ]
    return (
        "exit codes:\n"
        + "\n".join(lines)
        + "\n\n--json prints exactly one JSON document on stdout; its keys are listed in\n"
        "`python -m pydoc metalab.cli_inspect`."
    )
