"""Results backed by columns: loading 300,000 FileStore records without 300,000 objects.

A store's ``load_columns`` (``FileStore.load_columns``: one parallel Rust call over every
record file, ``runs/*/*.json``) returns one list per field (``run_id``, ``status``, ...), per
parameter and per metric.
:class:`ColumnarResults` is a :class:`~metalab.results.Results` that answers
``to_dataframe()``, ``table()``, ``filter()``, ``successful``, ``summary()`` from those
columns, and materialises a :class:`~metalab.results.Run` (reading its record file) only
when one is indexed or iterated. See "Loading at scale" in ``docs/storage.md``.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from metalab.errors import StoreError
from metalab.records import ErrorInfo, RunRecord, RunState
from metalab.report import is_number
from metalab.results import Results, Run
from metalab.staleness import stale_flags
from metalab.store.base import LoadProblem, Store

__all__ = ["ColumnTable", "ColumnarResults", "LazyRun", "results_from_store"]

_RECORD_FIELDS = ("run_id", "experiment_id", "status", "task_index", "replicate")
_MISSING = object()


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


def _columns(raw: list[tuple[str, list[Any], list[int], int, int]]) -> dict[str, Column]:
    return {
        name: Column(name, values, frozenset(nulls), first, position)
        for name, values, nulls, first, position in raw
    }


class ColumnTable:
    """Loaded records as columns plus a cache of materialised runs."""

    def __init__(self, data: dict[str, Any], store: Store) -> None:
        self.store = store
        self.run_id: list[str] = data["run_id"]
        self.experiment_id: list[str] = data["experiment_id"]
        self.status: list[str] = data["status"]
        self.task_index: list[int] = data["task_index"]
        self.replicate: list[int] = data["replicate"]
        self.duration: list[float | None] = data["duration_s"]
        self.started_at: list[str | None] = data["started_at"]
        self.params = _columns(data["params"])
        self.metrics = _columns(data["metrics"])
        self._runs: list[LazyRun | None] = [None] * len(self.run_id)
        self._errors: dict[int, ErrorInfo | None] = {}

    def __len__(self) -> int:
        return len(self.run_id)

    def run(self, row: int) -> LazyRun:
        """The Run of ``row`` (its record is read on first use)."""
        run = self._runs[row]
        if run is None:
            run = LazyRun(self.run_id[row], self.status[row], self.store, self, row)
            self._runs[row] = run
        return run

    @functools.cached_property
    def stale(self) -> bytes:
        """1 where a row was computed by other code than its experiment's latest launch.

        From launch manifests alone (:mod:`metalab.staleness`): no record is read.
        """
        if not self.run_id:
            return b""
        return stale_flags(self.store.list_manifests(), self.experiment_id, self.run_id)

    def errors(self, rows: Sequence[int]) -> list[ErrorInfo | None]:
        """The error of each row (``None`` for successful ones).

        Errors are not columns: the records of the rows that did not succeed are read, in
        one batched store call, on first use (a sweep's failures, not all its runs).
        """
        status, run_ids = self.status, self.run_id
        wanted = [r for r in rows if status[r] != "success" and r not in self._errors]
        if not wanted and not self._errors:
            return [None] * len(rows)  # every row succeeded: nothing to read
        if wanted:
            loaded = self.store.load_records(run_ids=[run_ids[r] for r in wanted])
            by_id = {record.run_id: record for record in loaded.records}
            for row in wanted:
                record = by_id.get(run_ids[row])
                self._errors[row] = None if record is None else record.error
                if record is not None:
                    self.run(row).record = record  # read once, kept for Run.error too
        return [self._errors.get(row) for row in rows]

    def cached_runs(self, rows: Sequence[int]) -> Iterator[LazyRun]:
        """Runs of ``rows`` that were already materialised."""
        for row in rows:
            run = self._runs[row]
            if run is not None:
                yield run

    def record_value(self, row: int, key: str) -> Any:
        """A record field of a row, read from columns when possible."""
        if key in _RECORD_FIELDS:
            return getattr(self, key)[row]
        value = getattr(self.run(row).record, key, _MISSING)
        return value.value if isinstance(value, RunState) else value


class LazyRun(Run):
    """A :class:`Run` whose record is read from the store on first access."""

    def __init__(
        self,
        run_id: str,
        status: str,
        store: Store,
        table: ColumnTable | None = None,
        row: int = -1,
    ) -> None:
        self._table = table
        self._row = row
        self._run_id = run_id
        self._status = RunState(status)
        self._store = store
        self._derived: dict[str, Any] | None = None
        self._record: RunRecord | None = None

    @property
    def record(self) -> RunRecord:
        """The full record (read from the store once).

        Raises:
            StoreError: the record vanished from the store since it was listed.
        """
        if self._record is None:
            record = self._store.get_record(self._run_id)
            if record is None:
                raise StoreError(f"record of run {self._run_id} is no longer in {self._store}")
            self._record = record
        return self._record

    @record.setter
    def record(self, value: RunRecord) -> None:
        self._record = value

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def status(self) -> RunState:
        return self._status if self._record is None else self._record.status

    @property
    def is_stale(self) -> bool:
        if self._table is None:
            return super().is_stale
        return bool(self._table.stale[self._row])


class ColumnarResults(Results):
    """Results whose tabular operations read columns; runs are materialised lazily."""

    def __init__(
        self, table: ColumnTable, rows: Sequence[int], problems: Sequence[LoadProblem] = ()
    ) -> None:
        self._table = table
        self._sel: Sequence[int] = rows
        self.store = table.store
        self.problems = list(problems)

    # -- sequence ---------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> Results: ...
    def __getitem__(self, index: int | slice) -> Run | Results:
        if isinstance(index, slice):
            return ColumnarResults(self._table, self._sel[index])
        return self._table.run(self._sel[index])

    def __len__(self) -> int:
        return len(self._sel)

    def __iter__(self) -> Iterator[Run]:
        run = self._table.run
        return (run(row) for row in self._sel)

    def __repr__(self) -> str:
        status = self._table.status
        ok = sum(1 for row in self._sel if status[row] == "success")
        return f"Results({len(self)} runs, {ok} successful)"

    def _status_counts(self) -> dict[str, int]:
        # From the status column: counting must not materialise a Run per row.
        status = self._table.status
        return dict(collections.Counter(status[row] for row in self._sel))

    def _where(self, keep: Callable[[int], bool]) -> ColumnarResults:
        return ColumnarResults(self._table, [row for row in self._sel if keep(row)])

    def _subset(self, keep: Sequence[bool]) -> Results:
        rows = [row for row, wanted in zip(self._sel, keep, strict=True) if wanted]
        return ColumnarResults(self._table, rows, self.problems)

    def _record_column(self, name: str) -> list[Any]:
        values: list[Any] = getattr(self._table, name)
        sel = self._sel
        return values if sel == range(len(values)) else [values[row] for row in sel]

    def _stale(self) -> list[bool]:
        flags = self._table.stale
        if 1 not in flags:
            return [False] * len(self._sel)
        return [bool(flags[row]) for row in self._sel]

    def _errors(self) -> list[ErrorInfo | None]:
        return self._table.errors(self._sel)

    def _successful_records(self) -> list[RunRecord]:
        # plot_series needs stepped metrics, which are not columns: one batched read.
        table = self._table
        wanted = [table.run_id[row] for row in self._sel if table.status[row] == "success"]
        return self.store.load_records(run_ids=wanted).records

    @property
    def successful(self) -> Results:
        status = self._table.status
        return self._where(lambda row: status[row] == "success")

    @property
    def failed(self) -> Results:
        status = self._table.status
        return self._where(lambda row: status[row] == "failed")

    def filter(self, **criteria: Any) -> Results:
        table = self._table

        def value_of(row: int, key: str) -> Any:
            for columns in (table.params, table.metrics):
                column = columns.get(key)
                if column is not None and column.present(row):
                    return column.values[row]
            return table.record_value(row, key)

        return self._where(lambda row: all(value_of(row, k) == v for k, v in criteria.items()))

    # -- tables -----------------------------------------------------------------------
    def _derived_for_all(self) -> dict[str, dict[str, Any]]:
        run_ids = self._table.run_id
        found = self.store.get_derived([run_ids[row] for row in self._sel])
        for run in self._table.cached_runs(self._sel):
            run._derived = found.get(run.run_id, {})
        return found

    def _ordered(
        self, include_params: bool, include_metrics: bool, param_prefix: str
    ) -> list[tuple[str, Column]]:
        """Output name and column of every param/metric present in the selection, in
        first-appearance order (a metric named like an earlier column keeps its place)."""
        keyed: list[tuple[tuple[int, int, int], str, Column]] = []
        sections = []
        if include_params:
            sections.append((1, param_prefix, self._table.params))
        if include_metrics:
            sections.append((2, "", self._table.metrics))
        for section, prefix, columns in sections:
            for column in columns.values():
                first = column.first_in(self._sel)
                if first is not None:
                    keyed.append(((first, section, column.position), prefix + column.name, column))
        keyed.sort(key=lambda item: item[0])
        return [(name, column) for _, name, column in keyed]

    def _columns_out(
        self,
        include_params: bool,
        include_metrics: bool,
        include_record: bool,
        include_derived: bool,
        param_prefix: str,
    ) -> dict[str, list[Any]]:
        table, sel = self._table, self._sel
        whole = isinstance(sel, range) and sel == range(len(table))

        def pick(values: list[Any]) -> list[Any]:
            return values if whole else [values[row] for row in sel]

        out: dict[str, list[Any]] = {}
        if include_record and sel:
            out["run_id"] = pick(table.run_id)
            out["experiment_id"] = pick(table.experiment_id)
            out["status"] = pick(table.status)
            out["replicate"] = pick(table.replicate)
            out["duration"] = pick(table.duration)
            out["stale"] = self._stale()
            errors = self._errors()
            out["error_type"] = [None if e is None else e.type for e in errors]
            out["error_message"] = [None if e is None else e.message for e in errors]
        for name, column in self._ordered(include_params, include_metrics, param_prefix):
            values = pick(column.values)
            if name in out:
                # Later keys overwrite earlier ones where present, as dict.update does.
                merged = list(out[name])
                for at, row in enumerate(sel):
                    if column.present(row):
                        merged[at] = values[at]
                values = merged
            out[name] = values
        if include_derived:
            stored = self._derived_for_all()
            run_ids = table.run_id
            per_row = [stored.get(run_ids[row], {}) for row in sel]
            names = list(dict.fromkeys(k for values in per_row for k in values))
            for key in names:
                out[f"derived_{key}"] = [values.get(key) for values in per_row]
        return out

    def to_dataframe(
        self,
        include_params: bool = True,
        include_metrics: bool = True,
        include_record: bool = True,
        include_derived: bool = False,
        derived_metrics: Sequence[Callable[[Any], dict[str, Any]]] | None = None,
    ) -> Any:
        import pandas as pd

        if derived_metrics:
            return super().to_dataframe(
                include_params, include_metrics, include_record, include_derived, derived_metrics
            )
        return pd.DataFrame(
            self._columns_out(
                include_params, include_metrics, include_record, include_derived, "param_"
            )
        )

    def _rows(
        self,
        include_params: bool,
        include_metrics: bool,
        include_record: bool,
        include_derived: bool,
        derived_metrics: Sequence[Callable[[Any], dict[str, Any]]] | None,
        param_prefix: str,
    ) -> list[dict[str, Any]]:
        from metalab.derived import apply_derived

        table = self._table
        ordered = self._ordered(include_params, include_metrics, param_prefix)
        stored = self._derived_for_all() if include_derived else {}
        stale = self._stale() if include_record else []
        errors = self._errors() if include_record else []
        rows = []
        for at, row in enumerate(self._sel):
            out: dict[str, Any] = {}
            if include_record:
                error = errors[at]
                out.update(
                    run_id=table.run_id[row],
                    experiment_id=table.experiment_id[row],
                    status=table.status[row],
                    replicate=table.replicate[row],
                    duration=table.duration[row],
                    stale=stale[at],
                    error_type=None if error is None else error.type,
                    error_message=None if error is None else error.message,
                )
            for name, column in ordered:
                if column.present(row):
                    out[name] = column.values[row]
            if include_derived:
                derived = stored.get(table.run_id[row], {})
                out.update({f"derived_{k}": v for k, v in derived.items()})
            if derived_metrics:
                values, _ = apply_derived(table.run(row).record, self.store, derived_metrics)
                out.update({f"derived_{k}": v for k, v in values.items()})
            rows.append(out)
        return rows

    def _groups(
        self, keys: Sequence[str]
    ) -> list[tuple[tuple[Any, ...], int, list[tuple[str, list[float]]]]]:
        table = self._table
        lookups = [self._group_lookup(k) for k in keys]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for row in self._sel:
            if table.status[row] != "success":
                continue
            groups.setdefault(tuple(look(row) for look in lookups), []).append(row)
        metrics = sorted(table.metrics.values(), key=lambda c: (c.first_row, c.position))
        out = []
        for group_key, rows in groups.items():
            present = [(c, c.first_in(rows)) for c in metrics]
            found = []
            for column, _first in sorted(
                ((c, f) for c, f in present if f is not None), key=lambda cf: cf[1]
            ):
                values = column.values
                numbers = [float(values[r]) for r in rows if is_number(values[r])]
                found.append((column.name, numbers))
            out.append((group_key, len(rows), found))
        return out

    def _group_lookup(self, key: str) -> Callable[[int], Any]:
        """Value of a group key in a row: the param, else the record field, else None."""
        column = self._table.params.get(key)
        if column is not None:
            return lambda row: column.values[row] if column.present(row) else None
        if key in _RECORD_FIELDS:
            values = getattr(self._table, key)
            return lambda row: values[row]
        return lambda row: None


def results_from_store(
    store: Store, experiment_id: str | None = None, run_ids: Sequence[str] | None = None
) -> Results:
    """Load results from any store: columnar when it supports it, records otherwise."""
    loader = getattr(store, "load_columns", None)
    if callable(loader):
        data, problems = loader(experiment_id=experiment_id, run_ids=run_ids)
        table = ColumnTable(data, store)
        return ColumnarResults(table, range(len(table)), problems)
    loaded = store.load_records(experiment_id=experiment_id, run_ids=run_ids)
    return Results.from_records(loaded.records, store, loaded.problems)
