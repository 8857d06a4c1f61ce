"""Query and analyse the runs of an experiment."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from metalab.capture.serializers import AllowPickle, deserialize
from metalab.derived import apply_derived
from metalab.errors import ExperimentError
from metalab.html import MAX_ROWS, PngImage, results_html, run_html
from metalab.plots import ResultsPlots, RunFigures
from metalab.records import ErrorInfo, RunRecord, RunState
from metalab.report import (
    ErrorGroup,
    ResultTable,
    SummaryGroup,
    error_groups,
    failure_report,
    format_cell,
    is_number,
    labelled_rows,
    render_summary,
    summary_groups,
)
from metalab.staleness import Generation, generation, latest_generations
from metalab.store.base import LoadProblem, Store
from metalab.store.locator import create_store

__all__ = ["ResultTable", "Results", "Run", "load_results"]


class Run(RunFigures):
    """One run's record with lazy access to its artifacts, log and derived metrics."""

    _current: Generation | None = None
    # The code its experiment runs now (from the latest launch manifest), set by Results.

    def __init__(
        self, record: RunRecord, store: Store, derived: dict[str, Any] | None = None
    ) -> None:
        self.record = record
        self._store = store
        self._derived = derived

    @property
    def run_id(self) -> str:
        """The stable run ID."""
        return self.record.run_id

    @property
    def status(self) -> RunState:
        """success, failed, cancelled or running."""
        return self.record.status

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters."""
        return self.record.params

    @property
    def metrics(self) -> dict[str, Any]:
        """Captured metrics (the last value of stepped metrics)."""
        return self.record.metrics

    @property
    def error(self) -> Any:
        """The failure (type, message, traceback), or ``None``."""
        return self.record.error

    @property
    def is_stale(self) -> bool:
        """True when another version of the operation computed this run.

        "Now" is the code of the experiment's latest launch (its manifest's code hash;
        another metalab major version counts too). False when they match or when no
        launch is recorded to compare with. Re-run stale runs with
        ``metalab.run(exp, rerun="stale")``.
        """
        current, provenance = self._current, self.record.provenance
        if current is None or provenance is None:
            return False
        return generation(provenance.code_hash, provenance.metalab) != current

    @property
    def derived(self) -> dict[str, Any]:
        """Stored derived metrics (``{}`` when none were computed)."""
        if self._derived is None:
            self._derived = self._store.get_derived([self.run_id]).get(self.run_id, {})
        return self._derived

    def metric_series(self, name: str) -> list[tuple[int, Any]]:
        """Return ``[(step, value), ...]`` of a stepped metric, ordered by step.

        Raises:
            KeyError: the run recorded no stepped metric ``name``.
        """
        if name not in self.record.metric_series:
            known = sorted(self.record.metric_series)
            raise KeyError(f"run {self.run_id} has no stepped metric {name!r} (has: {known})")
        return sorted((int(s), v) for s, v in self.record.metric_series[name])

    def artifact(self, name: str, *, allow_pickle: AllowPickle = False) -> Any:
        """Load an artifact back into the object that was captured.

        A figure (``capture.figure``) comes back as its PNG bytes, as a
        :class:`~metalab.html.PngImage`: ``bytes`` that a notebook displays as an image.

        Args:
            name: the artifact's name.
            allow_pickle: for a pickle artifact: ``True`` loads it if this account wrote
                it (its seal verifies); ``"unverified"`` loads any pickle, running the
                code of whoever wrote it (e.g. one stored before pickles were sealed).

        Raises:
            KeyError: no artifact ``name``.
            UnsafeLoadError: the artifact is a pickle and ``allow_pickle`` is False.
            SignatureError: ``allow_pickle=True`` and another account wrote or altered
                the pickle; it was not unpickled.
        """
        infos = {a.name: a for a in self.record.artifacts}
        if name not in infos:
            raise KeyError(f"run {self.run_id} has no artifact {name!r} (has: {sorted(infos)})")
        info = infos[name]
        data = self._store.get_artifact(self.run_id, info)
        if info.kind == "png":
            return PngImage(data, name)
        return deserialize(info.kind, data, allow_pickle=allow_pickle, name=name)

    @property
    def log(self) -> str:
        """The run's log text."""
        return self._store.read_log(self.run_id)

    def __repr__(self) -> str:
        return f"Run({self.run_id[:12]}, {self.status.value}, params={self.params})"

    def _repr_html_(self) -> str:
        """Params, metrics, status, error and artifacts as HTML (for notebooks)."""
        return run_html(self.record)


class Results(ResultsPlots, Sequence[Run]):
    """An ordered collection of runs with tabular, filtering and export helpers."""

    def __init__(
        self, runs: Sequence[Run], store: Store, problems: Sequence[LoadProblem] = ()
    ) -> None:
        self._runs = list(runs)
        self.store = store
        self.problems = list(problems)

    @classmethod
    def from_records(
        cls, records: Sequence[RunRecord], store: Store, problems: Sequence[LoadProblem] = ()
    ) -> Results:
        """Wrap records, ordered by (experiment, task index)."""
        ordered = sorted(records, key=lambda r: (r.experiment_id, r.task_index))
        runs = [Run(r, store) for r in ordered]
        if runs:
            current = latest_generations(store.list_manifests())
            for run in runs:
                run._current = current.get(run.record.experiment_id)
        return cls(runs, store, problems)

    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> Results: ...
    def __getitem__(self, index: int | slice) -> Run | Results:
        if isinstance(index, slice):
            return Results(self._runs[index], self.store)
        return self._runs[index]

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs)

    def __repr__(self) -> str:
        ok = sum(r.status is RunState.SUCCESS for r in self._runs)
        return f"Results({len(self)} runs, {ok} successful)"

    def _status_counts(self) -> dict[str, int]:
        """Runs per status value (``{"success": 7, "failed": 2}``)."""
        counts: dict[str, int] = {}
        for run in self._runs:
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
        return counts

    def _repr_html_(self) -> str:
        """Counts by status and the first rows of :meth:`table`, as HTML (for notebooks).

        Only the first rows are tabulated, so 300,000 runs render as fast as ten.
        """
        return results_html(len(self), self._status_counts(), self[:MAX_ROWS].table())

    @property
    def successful(self) -> Results:
        """Runs whose status is success."""
        return Results([r for r in self._runs if r.status is RunState.SUCCESS], self.store)

    @property
    def failed(self) -> Results:
        """Runs whose status is failed."""
        return Results([r for r in self._runs if r.status is RunState.FAILED], self.store)

    def filter(self, **criteria: Any) -> Results:
        """Keep runs whose param, metric or record field equals each criterion.

        A key is looked up in params first, then metrics, then record fields
        (``status`` accepts ``"success"``).
        """

        def value_of(run: Run, key: str) -> Any:
            if key in run.params:
                return run.params[key]
            if key in run.metrics:
                return run.metrics[key]
            value = getattr(run.record, key, _MISSING)
            return value.value if isinstance(value, RunState) else value

        return Results(
            [r for r in self._runs if all(value_of(r, k) == v for k, v in criteria.items())],
            self.store,
        )

    def _derived_for_all(self) -> dict[str, dict[str, Any]]:
        found = self.store.get_derived([r.run_id for r in self._runs])
        for run in self._runs:
            run._derived = found.get(run.run_id, {})
        return found

    def to_dataframe(
        self,
        include_params: bool = True,
        include_metrics: bool = True,
        include_record: bool = True,
        include_derived: bool = False,
        derived_metrics: Sequence[Callable[[Any], dict[str, Any]]] | None = None,
    ) -> Any:
        """Return a pandas DataFrame, one row per run.

        Columns: ``param_*`` (params), metric names, record fields (``run_id``,
        ``status``, ``duration``...), ``derived_*`` (stored derived metrics, or computed
        on the fly from ``derived_metrics`` without persisting them).
        """
        import pandas as pd

        return pd.DataFrame(
            self._rows(
                include_params,
                include_metrics,
                include_record,
                include_derived,
                derived_metrics,
                param_prefix="param_",
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
        stored = self._derived_for_all() if include_derived else {}
        rows = []
        for run in self._runs:
            row: dict[str, Any] = {}
            if include_record:
                rec = run.record
                row.update(
                    run_id=rec.run_id,
                    experiment_id=rec.experiment_id,
                    status=rec.status.value,
                    replicate=rec.replicate,
                    duration=rec.duration,
                    stale=run.is_stale,
                    error_type=rec.error.type if rec.error else None,
                    error_message=rec.error.message if rec.error else None,
                )
            if include_params:
                row.update({f"{param_prefix}{k}": v for k, v in run.params.items()})
            if include_metrics:
                row.update(run.metrics)
            if include_derived:
                row.update({f"derived_{k}": v for k, v in stored.get(run.run_id, {}).items()})
            if derived_metrics:
                values, _ = apply_derived(run.record, self.store, derived_metrics)
                row.update({f"derived_{k}": v for k, v in values.items()})
            rows.append(row)
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
                self._stale() if rows else [],
                errors,
            )
        )

    # -- per-row values that columnar results answer without materialising runs --------
    def _subset(self, keep: Sequence[bool]) -> Results:
        """The runs whose ``keep`` flag is true (aligned with this sequence)."""
        runs = [run for run, wanted in zip(self._runs, keep, strict=True) if wanted]
        return Results(runs, self.store, self.problems)

    def _record_column(self, name: str) -> list[Any]:
        """``run_id``, ``experiment_id``, ``replicate`` or ``status`` of every run."""
        if name == "status":
            return [run.status.value for run in self._runs]
        return [getattr(run.record, name) for run in self._runs]

    def _stale(self) -> list[bool]:
        """:attr:`Run.is_stale` of every run, in order."""
        return [run.is_stale for run in self._runs]

    def _errors(self) -> list[ErrorInfo | None]:
        """The error of every run (``None`` for successful ones), in order."""
        return [None if run.status is RunState.SUCCESS else run.record.error for run in self._runs]

    def error_groups(self) -> list[ErrorGroup]:
        """Runs that did not succeed, grouped by error type (most frequent first)."""
        status = self._record_column("status")
        if all(s == "success" for s in status):
            return []
        return error_groups(self._record_column("run_id"), self._errors())

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
        return keys, summary_groups(keys, self._groups(keys))

    def _groups(
        self, keys: Sequence[str]
    ) -> list[tuple[tuple[Any, ...], int, list[tuple[str, list[float]]]]]:
        """(key values, run count, [(metric, finite values)]) of each group, first seen first."""
        groups: dict[tuple[Any, ...], list[Run]] = {}
        for run in self.successful:
            key = tuple(_group_value(run, k) for k in keys)
            groups.setdefault(key, []).append(run)
        out = []
        for key, runs in groups.items():
            names = list(dict.fromkeys(m for r in runs for m in r.metrics))
            metrics = [
                (name, [float(r.metrics[name]) for r in runs if is_number(r.metrics.get(name))])
                for name in names
            ]
            out.append((key, len(runs), metrics))
        return out

    def display(self, group_by: Sequence[str] | str | None = None) -> None:
        """Print :meth:`summary` with labelled spreads (a rich table when rich is installed).

        Each metric cell reads ``mean ± std``; a note under the table says what ± is.
        """
        keys, groups = self._summary(group_by)
        ok = sum(1 for s in self._record_column("status") if s == "success")
        render_summary(keys, groups, f"{len(self)} runs ({ok} successful)", format_cell)

    def compute_derived(
        self, fns: Sequence[Callable[[Any], dict[str, Any]]], overwrite: bool = False
    ) -> dict[str, dict[str, str]]:
        """Compute and store derived metrics for successful runs.

        Existing values are kept unless ``overwrite``. Returns ``{run_id: {fn: error}}`` for
        runs where a function failed (the others are stored regardless).
        """
        existing = self._derived_for_all()
        failures: dict[str, dict[str, str]] = {}
        for run in self.successful:
            values, errors = apply_derived(run.record, self.store, fns)
            if errors:
                failures[run.run_id] = errors
            current = dict(existing.get(run.run_id, {}))
            merged = {**current, **values} if overwrite else {**values, **current}
            if merged != current:
                self.store.put_derived(run.run_id, merged)
            run._derived = merged
        return failures


_MISSING = object()
_GROUP_FIELDS = ("experiment_id", "replicate", "status", "task_index")


def _group_value(run: Run, key: str) -> Any:
    if key in run.params:
        return run.params[key]
    if key in _GROUP_FIELDS:
        value = getattr(run.record, key)
        return value.value if isinstance(value, RunState) else value
    return None


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
    from metalab.loading import load_filtered

    return load_filtered(create_store(store), experiment_id, experiment)
