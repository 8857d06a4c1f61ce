"""Loaded runs as columns: the one table behind :class:`~metalab.results.Results`.

Every store answers ``load_columns`` with one list per record field (``run_id``,
``status``, ...), per parameter and per metric: FileStore in one parallel Rust scan of its
record files, PostgreSQL in one query parsed in Rust, other stores from their records
(:func:`metalab.store.columns.columns_from_records`). :class:`ColumnTable` holds those
columns and answers, for any selection of rows, what ``to_dataframe()``, ``table()``,
``filter()`` and ``summary()`` need, without one object per run. A
:class:`~metalab.run_view.Run` is materialised only when a row is indexed or iterated, and its
record read only when something needs more than the columns (errors, stepped metrics,
artifacts); rows that need records are read in one batched store call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from metalab.records import ErrorInfo, RunRecord, RunState
from metalab.report import is_number
from metalab.run_view import Run
from metalab.staleness import stale_flags
from metalab.store.base import Store

__all__ = ["MISSING", "RECORD_FIELDS", "Column", "ColumnTable", "Groups"]

RECORD_FIELDS = ("run_id", "experiment_id", "status", "task_index", "replicate")
"""Record fields that are columns of their own (filter and group_by read them directly)."""

MISSING = object()
"""The value of a key a run does not have (equal to nothing, unlike ``None``)."""

Groups = list[tuple[tuple[Any, ...], int, list[tuple[str, list[float]]]]]
"""(key values, run count, [(metric, finite values)]) of each group, first seen first."""


@dataclass(frozen=True)
class Column:
    """Values of one parameter or metric, one per row (``None`` where absent).

    ``nulls`` are the rows that hold an explicit ``null`` (so ``None`` there means a
    value, not absence); ``first_row``/``position`` give first-appearance column order.
    """

    name: str
    values: list[Any]
    nulls: frozenset[int]
    first_row: int
    position: int
    frame: tuple[str, bytes] | None = None
    """``values`` as the array pandas infers from them (numpy dtype name, native bytes),
    when the loader could build it (numbers and booleans; ``None``: use ``values``)."""

    def present(self, row: int) -> bool:
        """True when the record of ``row`` has this key."""
        return self.values[row] is not None or row in self.nulls

    def first_in(self, rows: Sequence[int]) -> int | None:
        """Index within ``rows`` of the first row holding this key (``None``: nowhere)."""
        if isinstance(rows, range) and rows.start == 0 and rows.step == 1:
            return self.first_row if self.first_row < len(rows) else None
        for at, row in enumerate(rows):
            if self.present(row):
                return at
        return None


def _columns(
    raw: list[tuple[str, list[Any], list[int], int, int]],
    frames: list[tuple[str, bytes] | None] | None,
) -> dict[str, Column]:
    frames = frames if frames is not None else [None] * len(raw)
    return {
        name: Column(name, values, frozenset(nulls), first, position, frame)
        for (name, values, nulls, first, position), frame in zip(raw, frames, strict=True)
    }


def _array(frame: tuple[str, bytes]) -> Any:
    """A read-only numpy view of a loader-built column (no copy; pandas copies it)."""
    import numpy as np

    dtype, data = frame
    return np.frombuffer(data, dtype=dtype)


class ColumnTable:
    """Loaded records as columns, plus the runs and records materialised so far."""

    def __init__(self, data: dict[str, Any], store: Store) -> None:
        self.store = store
        self.run_id: list[str] = data["run_id"]
        self.experiment_id: list[str] = data["experiment_id"]
        self.status: list[str] = data["status"]
        self.task_index: list[int] = data["task_index"]
        self.replicate: list[int] = data["replicate"]
        self.duration: list[float | None] = data["duration_s"]
        self.started_at: list[str | None] = data["started_at"]
        self.params = _columns(data["params"], data.get("param_frames"))
        self.metrics = _columns(data["metrics"], data.get("metric_frames"))
        # ``duration`` as float64 bytes (None as NaN), when the loader built it.
        self.duration_frame: bytes | None = data.get("duration_frame")
        self._runs: list[Run | None] = [None] * len(self.run_id)
        self._gone: set[int] = set()  # rows whose record was no longer in the store

    def __len__(self) -> int:
        return len(self.run_id)

    # -- runs and records -------------------------------------------------------------
    def run(self, row: int) -> Run:
        """The Run of ``row`` (its record is read on first use)."""
        run = self._runs[row]
        if run is None:
            run = Run.lazy(self.run_id[row], self.status[row], self.store, self, row)
            self._runs[row] = run
        return run

    def adopt(self, row: int, run: Run) -> None:
        """Hand out ``run`` (whose record is in memory) as the Run of ``row``."""
        self._runs[row] = run

    def cached_runs(self, rows: Sequence[int]) -> Iterator[Run]:
        """Runs of ``rows`` that were already materialised."""
        for row in rows:
            run = self._runs[row]
            if run is not None:
                yield run

    def records(self, rows: Sequence[int]) -> list[RunRecord | None]:
        """The record of each row (``None``: gone from the store since it was listed).

        Records not yet in memory are read in one batched store call and kept by their
        runs; a row whose record is gone is remembered, so it is not asked for again.
        """
        runs, run_ids, gone = self._runs, self.run_id, self._gone
        wanted = [
            row
            for row in rows
            if row not in gone and ((run := runs[row]) is None or not run.record_loaded)
        ]
        if wanted:
            loaded = self.store.load_records(run_ids=[run_ids[row] for row in wanted])
            by_id = {record.run_id: record for record in loaded.records}
            for row in wanted:
                record = by_id.get(run_ids[row])
                if record is None:
                    gone.add(row)  # no Run is materialised for it: nothing to hand out
                else:
                    self.run(row).record = record
        return [None if row in gone else self.run(row).record for row in rows]

    def errors(self, rows: Sequence[int]) -> list[ErrorInfo | None]:
        """The error of each row (``None`` for successful ones).

        Errors are not columns: the records of the rows that did not succeed are read,
        in one batched store call, on first use (a sweep's failures, not all its runs).
        """
        status = self.status
        failed = [row for row in rows if status[row] != "success"]
        if not failed:
            return [None] * len(rows)  # every row succeeded: nothing to read
        found = dict(zip(failed, self.records(failed), strict=True))
        out: list[ErrorInfo | None] = []
        for row in rows:
            record = found.get(row)
            out.append(None if record is None else record.error)
        return out

    def reasons(self, rows: Sequence[int]) -> list[str | None]:
        """Why each row did not succeed (a ``FailureReason`` value; ``None`` for successes
        and records written before reasons). Read with the same records as :meth:`errors`."""
        status = self.status
        failed = [row for row in rows if status[row] != "success"]
        if not failed:
            return [None] * len(rows)
        found = dict(zip(failed, self.records(failed), strict=True))
        out: list[str | None] = []
        for row in rows:
            record = found.get(row)
            out.append(None if record is None or record.reason is None else record.reason.value)
        return out

    def record_value(self, row: int, key: str) -> Any:
        """A record field of a row, read from columns when possible (``MISSING``: none)."""
        if key in RECORD_FIELDS:
            return getattr(self, key)[row]
        value = getattr(self.run(row).record, key, MISSING)
        return value.value if isinstance(value, RunState) else value

    # -- per-row values ---------------------------------------------------------------
    @functools.cached_property
    def stale(self) -> bytes:
        """1 where a row was computed by other code than its experiment's latest launch.

        From launch manifests alone (:mod:`metalab.staleness`): no record is read.
        """
        if not self.run_id:
            return b""
        return stale_flags(self.store.list_manifests(), self.experiment_id, self.run_id)

    def stale_at(self, row: int) -> bool:
        """:attr:`stale` of one row (what :attr:`Run.is_stale` answers)."""
        return bool(self.stale[row])

    def stale_of(self, rows: Sequence[int]) -> list[bool]:
        """:attr:`stale` of each row, in order."""
        flags = self.stale
        if 1 not in flags:
            return [False] * len(rows)
        return [bool(flags[row]) for row in rows]

    def pick(self, name: str, rows: Sequence[int]) -> list[Any]:
        """Record column ``name`` (``run_id``, ``status``, ``duration``...) at ``rows``."""
        values: list[Any] = getattr(self, name)
        return values if rows == range(len(values)) else [values[row] for row in rows]

    def derived(self, rows: Sequence[int]) -> dict[str, dict[str, Any]]:
        """Stored derived metrics of ``rows`` by run ID (one store call; runs keep them)."""
        run_ids = self.run_id
        found = self.store.get_derived([run_ids[row] for row in rows])
        for run in self.cached_runs(rows):
            run.remember_derived(found.get(run.run_id, {}))
        return found

    # -- tables -----------------------------------------------------------------------
    def ordered(
        self, rows: Sequence[int], params: bool, metrics: bool, param_prefix: str
    ) -> list[tuple[str, list[Column]]]:
        """Output name and columns of every param/metric present in ``rows``.

        Names come in first-appearance order. A name shared by a param and a metric
        (possible without a prefix) has both columns, param first: in a row holding both
        the metric wins, as ``row.update(params); row.update(metrics)`` would decide.
        """
        found: dict[str, tuple[tuple[int, int, int], list[Column]]] = {}
        sections = []
        if params:
            sections.append((1, param_prefix, self.params))
        if metrics:
            sections.append((2, "", self.metrics))
        for section, prefix, columns in sections:
            for column in columns.values():
                first = column.first_in(rows)
                if first is None:
                    continue
                key, name = (first, section, column.position), prefix + column.name
                if name in found:
                    earlier, both = found[name]
                    found[name] = (min(earlier, key), [*both, column])
                else:
                    found[name] = (key, [column])
        return [(name, cols) for name, (_, cols) in sorted(found.items(), key=lambda i: i[1][0])]

    def record_row(self, row: int, stale: bool, error: ErrorInfo | None) -> dict[str, Any]:
        """The record fields ``to_dataframe()`` shows for one row."""
        return {
            "run_id": self.run_id[row],
            "experiment_id": self.experiment_id[row],
            "status": self.status[row],
            "replicate": self.replicate[row],
            "duration": self.duration[row],
            "stale": stale,
            "error_type": None if error is None else error.type,
            "error_message": None if error is None else error.message,
            "reason": None if error is None else self.reasons([row])[0],
        }

    def columns_out(
        self,
        rows: Sequence[int],
        params: bool,
        metrics: bool,
        record: bool,
        derived: bool,
        arrays: bool = False,
    ) -> dict[str, Any]:
        """``to_dataframe()``'s columns for ``rows``, built column by column.

        With ``arrays``, a column the loader built as a native array (see
        :attr:`Column.frame`) is given as that numpy array when ``rows`` are all the rows
        (a subset could infer another dtype than the whole, e.g. int64 where the whole
        needs NaN); pandas then takes it as is instead of inferring from a list.
        """
        whole = isinstance(rows, range) and rows == range(len(self))
        native = arrays and whole and len(rows) > 0

        def pick(values: list[Any]) -> list[Any]:
            return values if whole else [values[row] for row in rows]

        # Output name -> its native array, used unless the name is merged from several
        # sources (a metric named like a record field or a param): merging needs values.
        arrays_of: dict[str, Any] = {}
        out: dict[str, Any] = {}
        if record and rows:
            for name in ("run_id", "experiment_id", "status", "replicate", "duration"):
                out[name] = pick(getattr(self, name))
            if native and self.duration_frame is not None:
                arrays_of["duration"] = ("float64", self.duration_frame)
            out["stale"] = self.stale_of(rows)
            if native:
                arrays_of["stale"] = ("bool", self.stale)  # bytes of 0 and 1
            errors = self.errors(rows)
            out["error_type"] = [None if e is None else e.type for e in errors]
            out["error_message"] = [None if e is None else e.message for e in errors]
            out["reason"] = self.reasons(rows)
        for name, columns in self.ordered(rows, params, metrics, "param_"):
            if name not in out and len(columns) == 1:
                out[name] = pick(columns[0].values)
                if native and columns[0].frame is not None:
                    arrays_of[name] = columns[0].frame
                continue
            arrays_of.pop(name, None)
            # Later keys overwrite earlier ones where present, as dict.update does (a
            # metric named like a record field or a param); the name keeps its place.
            merged = list(out.get(name, [None] * len(rows)))
            for column in columns:
                values = column.values
                for at, row in enumerate(rows):
                    if column.present(row):
                        merged[at] = values[row]
            out[name] = merged
        for name, frame in arrays_of.items():
            out[name] = _array(frame)
        if derived:
            stored = self.derived(rows)
            run_ids = self.run_id
            per_row = [stored.get(run_ids[row], {}) for row in rows]
            for key in dict.fromkeys(k for values in per_row for k in values):
                out[f"derived_{key}"] = [values.get(key) for values in per_row]
        return out

    def rows_out(
        self,
        rows: Sequence[int],
        params: bool,
        metrics: bool,
        record: bool,
        derived: bool,
        param_prefix: str,
    ) -> list[dict[str, Any]]:
        """One dict per row: what ``table()`` and the csv fallback show, row by row."""
        ordered = self.ordered(rows, params, metrics, param_prefix)
        stored = self.derived(rows) if derived else {}
        stale = self.stale_of(rows) if record else []
        errors = self.errors(rows) if record else []
        out = []
        for at, row in enumerate(rows):
            values = self.record_row(row, stale[at], errors[at]) if record else {}
            for name, columns in ordered:
                for column in columns:
                    if column.present(row):
                        values[name] = column.values[row]
            if derived:
                found = stored.get(self.run_id[row], {})
                values.update({f"derived_{k}": v for k, v in found.items()})
            out.append(values)
        return out

    def groups(self, rows: Sequence[int], keys: Sequence[str]) -> Groups:
        """The successful rows of ``rows`` grouped by ``keys``: counts and metric values."""
        lookups = [self._group_lookup(k) for k in keys]
        status = self.status
        grouped: dict[tuple[Any, ...], list[int]] = {}
        for row in rows:
            if status[row] == "success":
                grouped.setdefault(tuple(look(row) for look in lookups), []).append(row)
        metrics = sorted(self.metrics.values(), key=lambda c: (c.first_row, c.position))
        out: Groups = []
        for group_key, members in grouped.items():
            present = [(c, c.first_in(members)) for c in metrics]
            found = []
            for column, _first in sorted(
                ((c, f) for c, f in present if f is not None), key=lambda cf: cf[1]
            ):
                values = column.values
                numbers = [float(values[r]) for r in members if is_number(values[r])]
                found.append((column.name, numbers))
            out.append((group_key, len(members), found))
        return out

    def _group_lookup(self, key: str) -> Callable[[int], Any]:
        """Value of a group key in a row: the param, else the record field, else None."""
        column = self.params.get(key)
        if column is not None:
            return lambda row: column.values[row] if column.present(row) else None
        if key in RECORD_FIELDS:
            values = getattr(self, key)
            return lambda row: values[row]
        return lambda row: None
