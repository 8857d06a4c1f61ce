"""Query and analyse the runs of an experiment.

:class:`Results` is an ordered selection of rows of one
:class:`~metalab.column_table.ColumnTable`: every store's ``load_columns`` feeds it (a
FileStore in one parallel Rust scan, PostgreSQL in one query, other stores from their
records), so ``to_dataframe()``, ``table()``, ``filter()`` and ``summary()`` read columns,
and a :class:`~metalab.run_view.Run` is materialised only when one is indexed or iterated.
See "Loading at scale" in ``docs/storage.md``.
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from metalab.column_table import ColumnTable
from metalab.derived import apply_derived
from metalab.errors import ExperimentError
from metalab.html import MAX_ROWS, results_html
from metalab.loading import select_experiment, wanted
from metalab.plots import ResultsPlots
from metalab.records import ErrorInfo, RunRecord
from metalab.report import (
    ErrorGroup,
    ResultTable,
    SummaryGroup,
    error_groups,
    failure_report,
    format_cell,
    labelled_rows,
    render_summary,
    summary_groups,
)
from metalab.run_view import Run
from metalab.store.base import LoadProblem, Store
from metalab.store.columns import columns_from_records
from metalab.store.locator import create_store

__all__ = ["ResultTable", "Results", "Run", "load_results", "results_from_store"]

DerivedFns = Sequence[Callable[[Any], dict[str, Any]]]


class Results(ResultsPlots, Sequence[Run]):
    """An ordered collection of runs with tabular, filtering and export helpers."""

    _table: ColumnTable
    _sel: Sequence[int]

    def __init__(
        self, runs: Sequence[Run], store: Store, problems: Sequence[LoadProblem] = ()
    ) -> None:
        """Results of ``runs``, in this order (their records tabulated into columns)."""
        runs = list(runs)
        data, kept = columns_from_records([run.record for run in runs], problems)
        table = ColumnTable(data, store)
        rows_of: dict[str, collections.deque[int]] = {}
        for row, run_id in enumerate(table.run_id):
            rows_of.setdefault(run_id, collections.deque()).append(row)
        rows = [rows_of[run.run_id].popleft() for run in runs]
        for row, run in zip(rows, runs, strict=True):
            table.adopt(row, run)  # the given runs are the ones handed out
        self._bind(table, rows, kept)

    def _bind(
        self, table: ColumnTable, rows: Sequence[int], problems: Sequence[LoadProblem]
    ) -> None:
        self._table = table
        self._sel = rows
        self.store = table.store
        self.problems = list(problems)

    @classmethod
    def from_table(
        cls,
        table: ColumnTable,
        rows: Sequence[int] | None = None,
        problems: Sequence[LoadProblem] = (),
    ) -> Results:
        """The rows ``rows`` (default: all, in table order) of a loaded column table."""
        results = cls.__new__(cls)
        results._bind(table, range(len(table)) if rows is None else rows, problems)
        return results

    @classmethod
    def from_records(
        cls, records: Sequence[RunRecord], store: Store, problems: Sequence[LoadProblem] = ()
    ) -> Results:
        """Wrap records, ordered by (experiment, task index), as every store loads them."""
        data, kept = columns_from_records(records, problems)
        table = ColumnTable(data, store)
        by_id = {record.run_id: record for record in records}
        for row, run_id in enumerate(table.run_id):
            table.run(row).record = by_id[run_id]  # in memory already: never read again
        return cls.from_table(table, problems=kept)

    def _view(self, rows: Sequence[int], problems: Sequence[LoadProblem] = ()) -> Results:
        return Results.from_table(self._table, rows, problems)

    # -- sequence ---------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> Results: ...
    def __getitem__(self, index: int | slice) -> Run | Results:
        if isinstance(index, slice):
            return self._view(self._sel[index])
        return self._table.run(self._sel[index])

    def __len__(self) -> int:
        return len(self._sel)

    def __iter__(self) -> Iterator[Run]:
        run = self._table.run
        return (run(row) for row in self._sel)

    def __repr__(self) -> str:
        return f"Results({len(self)} runs, {self._status_counts().get('success', 0)} successful)"

    def _status_counts(self) -> dict[str, int]:
        """Runs per status value (``{"success": 7, "failed": 2}``), from the status column."""
        status = self._table.status
        return dict(collections.Counter(status[row] for row in self._sel))

    def _repr_html_(self) -> str:
        """Counts by status and the first rows of :meth:`table`, as HTML (for notebooks).

        Only the first rows are tabulated, so 300,000 runs render as fast as ten.
        """
        return results_html(len(self), self._status_counts(), self[:MAX_ROWS].table())

    # -- selections -------------------------------------------------------------------
    def _where(self, status: str) -> Results:
        values = self._table.status
        return self._view([row for row in self._sel if values[row] == status])

    @property
    def successful(self) -> Results:
        """Runs whose status is success."""
        return self._where("success")

    @property
    def failed(self) -> Results:
        """Runs whose status is failed."""
        return self._where("failed")

    def filter(self, **criteria: Any) -> Results:
        """Keep runs whose param, metric or record field equals each criterion.

        A key is looked up in params first, then metrics, then record fields
        (``status`` accepts ``"success"``).
        """
        table = self._table

        def value_of(row: int, key: str) -> Any:
            for columns in (table.params, table.metrics):
                column = columns.get(key)
                if column is not None and column.present(row):
                    return column.values[row]
            return table.record_value(row, key)

        return self._view(
            [row for row in self._sel if all(value_of(row, k) == v for k, v in criteria.items())]
        )

    def _subset(self, keep: Sequence[bool]) -> Results:
        """The runs whose ``keep`` flag is true (aligned with this sequence)."""
        rows = [row for row, wanted in zip(self._sel, keep, strict=True) if wanted]
        return self._view(rows, self.problems)

    def _record_column(self, name: str) -> list[Any]:
        """``run_id``, ``experiment_id``, ``replicate`` or ``status`` of every run."""
        return self._table.pick(name, self._sel)

    def _errors(self) -> list[ErrorInfo | None]:
        """The error of every run (``None`` for successful ones), in order."""
        return self._table.errors(self._sel)

    def _successful_records(self) -> list[RunRecord]:
        """Records of the successful runs (for stepped metrics: one batched read)."""
        status = self._table.status
        wanted = [row for row in self._sel if status[row] == "success"]
        return [record for record in self._table.records(wanted) if record is not None]

    # -- tables -----------------------------------------------------------------------
    def to_dataframe(
        self,
        include_params: bool = True,
        include_metrics: bool = True,
        include_record: bool = True,
        include_derived: bool = False,
        derived_metrics: DerivedFns | None = None,
    ) -> Any:
        """Return a pandas DataFrame, one row per run.

        Columns: ``param_*`` (params), metric names, record fields (``run_id``,
        ``status``, ``duration``...), ``derived_*`` (stored derived metrics, or computed
        on the fly from ``derived_metrics`` without persisting them).
        """
        import pandas as pd

        if derived_metrics:
            rows = self._rows(
                include_params, include_metrics, include_record, include_derived, derived_metrics
            )
            return pd.DataFrame(rows)
        table = self._table
        columns = table.columns_out(
            self._sel, include_params, include_metrics, include_record, include_derived, True
        )
        return pd.DataFrame(columns)

    def _rows(
        self,
        include_params: bool,
        include_metrics: bool,
        include_record: bool,
        include_derived: bool,
        derived_metrics: DerivedFns | None,
        param_prefix: str = "param_",
    ) -> list[dict[str, Any]]:
        table, sel = self._table, self._sel
        rows = table.rows_out(
            sel, include_params, include_metrics, include_record, include_derived, param_prefix
        )
        if derived_metrics:
            records = table.records(sel)
            for at, (row, record) in enumerate(zip(sel, records, strict=True)):
                found = table.run(row).record if record is None else record  # None: raises
                values, _ = apply_derived(found, self.store, derived_metrics)
                rows[at].update({f"derived_{k}": v for k, v in values.items()})
        return rows

    def table(self, as_dataframe: bool = False) -> Any:
        """Return one row per run: params, metrics, status. A DataFrame on request.

        Columns appear when they tell rows apart: ``experiment_id`` when the runs belong
        to several experiments or versions, ``replicate`` when there are replicates,
        ``stale`` when some runs were computed by other code, ``error_type`` and
        ``error_message`` when some runs failed.
        """
        if as_dataframe:
            return self.to_dataframe()
        rows = self._rows(True, True, False, False, None, param_prefix="")
        status = self._record_column("status")
        errors = self._errors() if any(s != "success" for s in status) else []
        return ResultTable(
            labelled_rows(
                rows,
                self._record_column("experiment_id"),
                self._record_column("replicate"),
                status,
                self._table.stale_of(self._sel) if rows else [],
                errors,
            )
        )

    def error_groups(self) -> list[ErrorGroup]:
        """Runs that did not succeed, grouped by error type (most frequent first)."""
        status = self._record_column("status")
        if all(s == "success" for s in status):
            return []
        reasons = self._table.reasons(self._sel)
        return error_groups(self._record_column("run_id"), self._errors(), reasons)

    def failure_report(self) -> str:
        """One line per error type (count, first message, how to see its traceback).

        ``""`` when every run succeeded. ``RunHandle.result()`` prints it on stderr.
        """
        groups = self.error_groups()
        if not groups:
            return ""
        experiments = sorted(set(self._record_column("experiment_id")))
        label = experiments[0] if len(experiments) == 1 else ", ".join(experiments)
        return failure_report(label, len(self), groups, self.store)

    def to_csv(self, path: str | Path, **kwargs: Any) -> None:
        """Write :meth:`to_dataframe` as CSV (falls back to the csv module without pandas)."""
        try:
            self.to_dataframe(**kwargs).to_csv(path, index=False)
        except ImportError:
            rows = self._rows(True, True, True, False, None, param_prefix="param_")
            columns = list(dict.fromkeys(k for r in rows for k in r))
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)

    # -- summaries --------------------------------------------------------------------
    def summary(
        self, group_by: Sequence[str] | str | None = None, as_dataframe: bool = False
    ) -> Any:
        """Statistics of every numeric metric of the successful runs, per group.

        One row per group of ``group_by`` values (params, or ``experiment_id`` /
        ``replicate``; results mixing experiments are always grouped by
        ``experiment_id`` first): the group's values, ``runs``, then for each metric
        ``<metric>_mean``, ``<metric>_std`` (sample standard deviation, n - 1),
        ``<metric>_sem`` (std / sqrt(n)) and ``<metric>_n`` (finite values used);
        std and sem are NaN for a single value. A DataFrame when ``as_dataframe``.

        Raises:
            ExperimentError: ``group_by`` is not a name or a sequence of names.
        """
        rows = ResultTable(group.flat() for group in self._summary(group_by)[1])
        if as_dataframe:
            import pandas as pd

            return pd.DataFrame(rows)
        return rows

    def _summary(
        self, group_by: Sequence[str] | str | None
    ) -> tuple[list[str], list[SummaryGroup]]:
        keys = [group_by] if isinstance(group_by, str) else list(group_by or [])
        for key in keys:
            if not isinstance(key, str):
                raise ExperimentError(
                    f"group_by must name params or record fields (str), got {key!r}"
                )
        if "experiment_id" not in keys and len(set(self._record_column("experiment_id"))) > 1:
            keys.insert(0, "experiment_id")  # averaging over versions would mix results
        return keys, summary_groups(keys, self._table.groups(self._sel, keys))

    def display(self, group_by: Sequence[str] | str | None = None) -> None:
        """Print :meth:`summary` with labelled spreads (a rich table when rich is installed).

        Each metric cell reads ``mean ± std``; a note under the table says what ± is.
        """
        keys, groups = self._summary(group_by)
        ok = self._status_counts().get("success", 0)
        render_summary(keys, groups, f"{len(self)} runs ({ok} successful)", format_cell)

    def compute_derived(
        self, fns: DerivedFns, overwrite: bool = False
    ) -> dict[str, dict[str, str]]:
        """Compute and store derived metrics for successful runs.

        Existing values are kept unless ``overwrite``. Returns ``{run_id: {fn: error}}`` for
        runs where a function failed (the others are stored regardless).
        """
        existing = self._table.derived(self._sel)
        failures: dict[str, dict[str, str]] = {}
        for run in self.successful:
            values, errors = apply_derived(run.record, self.store, fns)
            if errors:
                failures[run.run_id] = errors
            current = dict(existing.get(run.run_id, {}))
            merged = {**current, **values} if overwrite else {**values, **current}
            if merged != current:
                self.store.put_derived(run.run_id, merged)
            run.remember_derived(merged)
        return failures


def results_from_store(
    store: Store, experiment_id: str | None = None, run_ids: Sequence[str] | None = None
) -> Results:
    """Load ``store``'s runs (optionally one experiment, or some runs) as :class:`Results`."""
    data, problems = store.load_columns(experiment_id=experiment_id, run_ids=run_ids)
    return Results.from_table(ColumnTable(data, store), problems=problems)


def load_results(
    store: Any, experiment_id: str | None = None, *, experiment: Any = None
) -> Results:
    """Load every run stored at ``store`` (a path, locator or Store).

    Unreadable records are listed in ``results.problems`` (file and reason) and the
    rest still load.

    Args:
        store: where the runs are.
        experiment_id: keep only this exact ``name:version``.
        experiment: keep only one experiment: ``"name"`` (all its versions),
            ``"name:version"`` or an :class:`~metalab.Experiment`.

    Warns:
        UserWarning: the runs mix versions of one experiment (tables then show
            ``experiment_id``, summaries group by it), or ``experiment`` matched nothing
            (the warning lists what the store holds).

    Raises:
        ExperimentError: both filters are given, or ``experiment`` is not a name or an
            Experiment.
    """
    opened = create_store(store)
    exact, name = wanted(experiment_id, experiment)
    results = results_from_store(opened, experiment_id=exact)
    keep = select_experiment(opened, experiment, results._record_column("experiment_id"), name)
    return results if keep is None else results._subset(keep)
