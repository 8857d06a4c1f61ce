"""Results backed by columns: loading 300,000 FileStore records without 300,000 objects.

:func:`load_columns` asks the Rust core to read every record file (``runs/*/*.json``) in
parallel and return one list per field (``run_id``, ``status``, ...), per parameter and per metric.
:class:`ColumnarResults` is a :class:`~metalab.results.Results` that answers
``to_dataframe()``, ``table()``, ``filter()``, ``successful``, ``summary()`` from those
columns, and materialises a :class:`~metalab.results.Run` (reading its record file) only
when one is indexed or iterated. See "Loading at scale" in ``docs/storage.md``.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from metalab import _core
from metalab.errors import StoreError
from metalab.records import RunRecord, RunState
from metalab.results import Results, ResultTable, Run
from metalab.store.base import LoadProblem, Store

__all__ = ["ColumnTable", "ColumnarResults", "LazyRun", "load_columns", "results_from_store"]

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

    def __len__(self) -> int:
        return len(self.run_id)

    def run(self, row: int) -> LazyRun:
        """The Run of ``row`` (its record is read on first use)."""
        run = self._runs[row]
        if run is None:
            run = LazyRun(self.run_id[row], self.status[row], self.store)
            self._runs[row] = run
        return run

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

    def __init__(self, run_id: str, status: str, store: Store) -> None:
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
        rows = []
        for row in self._sel:
            out: dict[str, Any] = {}
            if include_record:
                out.update(
                    run_id=table.run_id[row],
                    experiment_id=table.experiment_id[row],
                    status=table.status[row],
                    replicate=table.replicate[row],
                    duration=table.duration[row],
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

    def table(self, as_dataframe: bool = False) -> Any:
        if as_dataframe:
            return self.to_dataframe()
        rows = self._rows(True, True, False, False, None, param_prefix="")
        status = self._table.status
        for out, row in zip(rows, self._sel, strict=True):
            out["status"] = status[row]
        return ResultTable(rows)

    def summary(self, group_by: Sequence[str] | None = None) -> ResultTable:
        table = self._table
        keys = list(group_by or [])
        params = [table.params.get(k) for k in keys]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for row in self._sel:
            if table.status[row] != "success":
                continue
            group = tuple(
                c.values[row] if c is not None and c.present(row) else None for c in params
            )
            groups.setdefault(group, []).append(row)
        metrics = sorted(table.metrics.values(), key=lambda c: (c.first_row, c.position))
        out = ResultTable()
        for group_key, rows in groups.items():
            entry: dict[str, Any] = dict(zip(keys, group_key, strict=True))
            entry["runs"] = len(rows)
            present = [(c, c.first_in(rows)) for c in metrics]
            for column, _first in sorted(
                ((c, f) for c, f in present if f is not None), key=lambda cf: cf[1]
            ):
                values = [
                    float(column.values[row]) for row in rows if _is_number(column.values[row])
                ]
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    entry[column.name] = f"{statistics.fmean(values):.6g} ± {std:.3g}"
            out.append(entry)
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_columns(
    root: str, run_ids: Sequence[str] | None = None, experiment_id: str | None = None
) -> dict[str, Any]:
    """Read the records of a FileStore directory as columns (one parallel Rust call).

    Returns a dict with ``run_id``, ``experiment_id``, ``status``, ``task_index``,
    ``replicate``, ``duration_s``, ``started_at`` (lists), ``params`` and ``metrics``
    (lists of ``(name, values, explicit_null_rows, first_row, position)``) and
    ``problems`` (``(path, reason, corrupt)``).
    """
    ids = list(run_ids) if run_ids is not None else None
    data: dict[str, Any] = _core.load_record_columns(root, ids, experiment_id)
    return data


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
