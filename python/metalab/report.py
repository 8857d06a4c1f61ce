"""Plain-words reports: stale runs found on resume, failures of a launch, group statistics.

These are the sentences metalab prints when something needs the user's attention (once,
on stderr, each with what to do next) and the numbers behind ``Results.summary()``.
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from metalab.records import ErrorInfo
from metalab.staleness import StaleRuns
from metalab.store.base import Store

__all__ = [
    "SPREAD_NOTE",
    "ErrorGroup",
    "ResultTable",
    "Stats",
    "SummaryGroup",
    "describe",
    "error_groups",
    "failure_report",
    "format_cell",
    "is_number",
    "labelled_rows",
    "render_summary",
    "stale_notice",
    "store_argument",
    "summary_groups",
]

_MESSAGE_CHARS = 200


class ResultTable(list[dict[str, Any]]):
    """Rows of a result table; prints as an aligned text table."""

    def __str__(self) -> str:
        if not self:
            return "(no runs)"
        columns = list(dict.fromkeys(key for row in self for key in row))
        cells = [[format_cell(row.get(c)) for c in columns] for row in self]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)


def format_cell(value: Any) -> str:
    """A value as one table cell: short floats, one line, at most 80 characters."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if "\n" in text or len(text) > 80:
        # One cell, one line: an error message or a long value must not break the grid.
        text = text.strip().splitlines()[0][:77] + "..." if text.strip() else ""
    return text


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool): what summaries average."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation (n - 1 denominator), its standard error, count.

    ``std`` and ``sem`` are NaN when fewer than two values exist (undefined).
    """

    mean: float
    std: float
    sem: float
    n: int


def describe(values: Sequence[float]) -> Stats:
    """The :class:`Stats` of finite ``values`` (at least one)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        # math.nan itself (not float("nan")): equal containers stay equal (identity).
        return Stats(mean, math.nan, math.nan, n)
    std = statistics.stdev(values)
    return Stats(mean, std, std / math.sqrt(n), n)


@dataclass(frozen=True)
class ErrorGroup:
    """Failed (or cancelled) runs sharing one error type."""

    type: str
    count: int
    message: str
    """The message of the first such run (in result order)."""
    run_id: str
    """The first such run: ``metalab show STORE RUN_ID`` prints its whole traceback."""
    reason: str | None = None
    """Their reason kind when it is not ``exception`` (``out_of_memory``, ``timeout``...):
    what the infrastructure did, which the error type alone does not say."""


def error_groups(
    run_ids: Sequence[str],
    errors: Sequence[ErrorInfo | None],
    reasons: Sequence[str | None] | None = None,
) -> list[ErrorGroup]:
    """Group runs by error type and reason, most frequent first (ties: first seen first)."""
    first: dict[tuple[str, str | None], tuple[str, str]] = {}
    counts: dict[tuple[str, str | None], int] = {}
    kinds = reasons if reasons is not None else [None] * len(run_ids)
    for run_id, error, reason in zip(run_ids, errors, kinds, strict=True):
        if error is None:
            continue
        key = (error.type, None if reason == "exception" else reason)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, (error.message, run_id))
    order = sorted(counts, key=lambda t: -counts[t])  # sorted() is stable: ties keep order
    return [ErrorGroup(k[0], counts[k], first[k][0], first[k][1], k[1]) for k in order]


def labelled_rows(
    rows: Sequence[dict[str, Any]],
    experiments: Sequence[str],
    replicates: Sequence[int],
    status: Sequence[str],
    stale: Sequence[bool],
    errors: Sequence[ErrorInfo | None],
) -> list[dict[str, Any]]:
    """Table rows (params and metrics) with the columns that tell them apart.

    ``experiment_id`` first when several experiments or versions are mixed, then
    ``replicate`` when there are replicates; ``status`` after the values, then ``stale``
    when a row is stale and ``error_type``/``error_message`` when a row failed.
    ``stale`` and ``errors`` may be empty (none).
    """
    mixed = len(set(experiments)) > 1
    replicated = any(replicates)
    any_stale = any(stale)
    any_error = any(e is not None for e in errors)
    out = []
    for at, row in enumerate(rows):
        labelled: dict[str, Any] = {}
        if mixed:
            labelled["experiment_id"] = experiments[at]
        if replicated:
            labelled["replicate"] = replicates[at]
        labelled.update(row)
        labelled["status"] = status[at]
        if any_stale:
            labelled["stale"] = stale[at]
        if any_error:
            error = errors[at]
            labelled["error_type"] = None if error is None else error.type
            labelled["error_message"] = None if error is None else error.message
        out.append(labelled)
    return out


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > _MESSAGE_CHARS or len(lines) > 1:
        line = line[:_MESSAGE_CHARS].rstrip() + " ..."
    return line


def store_argument(store: Store) -> str:
    """How to name ``store`` on a metalab command line (a path for a FileStore)."""
    directory = store.directory
    where = str(directory) if directory is not None else store.locator
    return shlex.quote(where)


def failure_report(experiment: str, total: int, groups: Sequence[ErrorGroup], store: Store) -> str:
    """One header line, then one line per error type: count, first message, traceback.

    Returns ``""`` when nothing failed.
    """
    if not groups:
        return ""
    failed = sum(g.count for g in groups)
    where = store_argument(store)
    lines = [f"metalab: {failed} of {total} runs of {experiment} did not succeed:"]
    for group in groups:
        runs = "run" if group.count == 1 else "runs"
        message = _one_line(group.message) or "(no message)"
        kind = f"{group.reason}: " if group.reason else ""
        lines.append(
            f"  {kind}{group.type} ({group.count} {runs}): {message}  [first: run "
            f"{group.run_id[:12]}; full traceback: metalab show {where} {group.run_id}]"
        )
    return "\n".join(lines)


def _reasons(stale: StaleRuns) -> str:
    current = stale.current
    code = any(g.code_hash != current.code_hash for g in stale.generations)
    majors = sorted({g.metalab_major for g in stale.generations} - {current.metalab_major})
    parts = []
    if code:
        olds = sorted({g.code_hash[:12] for g in stale.generations} - {current.code_hash})
        parts.append(
            f"an earlier version of the operation (code hash {', '.join(olds)}; "
            f"now {current.code_hash[:12]})"
        )
    if majors:
        versions = ", ".join(f"{m}.x" for m in majors)
        parts.append(f"metalab {versions} (this is metalab {current.metalab_major}.x)")
    return " and ".join(parts)


def stale_notice(experiment: str, done: int, stale: StaleRuns, rerun: bool) -> str:
    """The one message about stale runs found on resume (``""`` when there are none)."""
    if not stale.count:
        return ""
    runs = "run" if stale.count == 1 else "runs"
    why = _reasons(stale)
    if rerun:
        return f"metalab: re-running {stale.count} stale {runs} of {experiment}, computed by {why}."
    return (
        f"metalab: {stale.count} of {done} finished runs of {experiment} are stale: computed "
        f"by {why}. They are reused as they are, not re-run. To re-run them: "
        f'metalab.run(exp, rerun="stale"). To tell them apart: the "stale" column of '
        f"results.table() / to_dataframe(), or run.is_stale."
    )


@dataclass(frozen=True)
class SummaryGroup:
    """One group of ``Results.summary()``: its key values, run count, metric statistics."""

    key: dict[str, Any]
    runs: int
    stats: list[tuple[str, Stats]]

    def flat(self) -> dict[str, Any]:
        """``{**key, "runs": n, "<metric>_mean": ..., "_std", "_sem", "_n"}``: plain numbers."""
        row = dict(self.key)
        row["runs"] = self.runs
        for name, stats in self.stats:
            row[f"{name}_mean"] = stats.mean
            row[f"{name}_std"] = stats.std
            row[f"{name}_sem"] = stats.sem
            row[f"{name}_n"] = stats.n
        return row


def summary_groups(
    keys: Sequence[str],
    groups: Iterable[tuple[tuple[Any, ...], int, list[tuple[str, list[float]]]]],
) -> list[SummaryGroup]:
    """Statistics of each ``(key values, run count, [(metric, finite values)])`` group."""
    return [
        SummaryGroup(
            dict(zip(keys, key, strict=True)),
            runs,
            [(name, describe(values)) for name, values in metrics if values],
        )
        for key, runs, metrics in groups
    ]


SPREAD_NOTE = (
    "± is the sample standard deviation (n - 1 denominator) of each group's successful "
    "runs; summary() returns mean, std, sem (std / sqrt(n)) and n as numbers."
)


def _cell(stats: Stats) -> str:
    if stats.n < 2:
        return f"{stats.mean:.6g} (n=1)"
    return f"{stats.mean:.6g} ± {stats.std:.3g}"


def render_summary(
    keys: Sequence[str], groups: Sequence[SummaryGroup], title: str, fmt: Any
) -> None:
    """Print groups as a table whose metric headers say ``mean ± std`` (rich if installed).

    ``fmt`` formats a key value as a cell.
    """
    metrics = list(dict.fromkeys(name for g in groups for name, _ in g.stats))
    headers = [*keys, "runs", *(f"{name} (mean ± std)" for name in metrics)]
    rows = []
    for group in groups:
        stats = dict(group.stats)
        cells = [fmt(group.key.get(k)) for k in keys] + [str(group.runs)]
        cells += [_cell(stats[name]) if name in stats else "" for name in metrics]
        rows.append(cells)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for cells in rows:
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        print(SPREAD_NOTE)
        return
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for cells in rows:
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(SPREAD_NOTE)  # not a caption: rich would wrap it to the table's width
