"""The dashboard's only door to a store: experiments, their run tables, runs, artifacts.

Everything the dashboard shows is read here through public metalab APIs
(:func:`metalab.load_results`, :class:`~metalab.results.Results`, the
:class:`~metalab.store.base.Store` methods and the inspection queries of
:mod:`metalab.cli_query`), so a faster source (a results index) can replace the table
loading in this one module without touching the pages or the JSON API.

Freshness without re-reading 300,000 records per request: each experiment's run table is
loaded once into a pandas DataFrame and kept in memory (:class:`Snapshot`). At most every
``refresh_s`` seconds a request checks the store's marker counts (one batched scan, no
record read); when they moved, the table is reloaded in a background thread while
requests keep being answered from the previous snapshot. A sweep in progress therefore
shows its counts climbing with at most ``refresh_s`` + one load of delay.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metalab.cli_query import ExperimentView, experiments
from metalab.errors import ExperimentError
from metalab.records import StoredState
from metalab.results import Results, load_results
from metalab.ui.refresh import as_categories, changed_runs, merge

if TYPE_CHECKING:
    import pandas as pd

    from metalab.records import ArtifactInfo, RunRecord
    from metalab.store.base import Store

__all__ = ["NotFound", "Snapshot", "StoreData"]

_RUN_ID = re.compile(r"[0-9a-f]{8,64}")
_SUMMARY_KINDS = ("numpy", "npz", "json", "pandas")
# The record columns of an experiment without any record yet (to_dataframe() of no run
# has no columns at all), so filters and pages answer "0 runs" instead of failing.
_EMPTY_COLUMNS = (
    "run_id",
    "experiment_id",
    "status",
    "replicate",
    "duration",
    "stale",
    "error_type",
    "error_message",
)
MAX_LOG_CHARS = 200_000  # a run page shows the log's tail beyond this
_MERGE_MIN = 5_000  # changed runs merged in without a full reload, at least


class NotFound(ExperimentError):
    """An experiment, run or artifact the store does not hold (HTTP 404)."""


@dataclass(frozen=True)
class Snapshot:
    """One experiment's run table as loaded at ``loaded_at`` (``time.time()``).

    ``frame`` has the columns of ``Results.to_dataframe()``; ``markers`` is the store's
    ``(success, failed)`` marker count when loading started, the change signal.
    """

    experiment_id: str
    frame: pd.DataFrame
    loaded_at: float
    load_seconds: float
    markers: tuple[int, int]
    problems: int
    record_columns: tuple[str, ...] = ()
    merges: int = 0  # incremental updates since the last full load


class _Entry:
    """The current snapshot of one experiment and its reload bookkeeping."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: Snapshot | None = None
        self.checked_at = 0.0
        self.reloading = False


class StoreData:
    """Read-only access to one store for the dashboard (thread-safe).

    Args:
        store: any opened store (file, PostgreSQL, fallback pair).
        refresh_s: how often, at most, the store is asked whether runs were written.
    """

    def __init__(self, store: Store, refresh_s: float = 3.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._views: list[ExperimentView] = []
        self._manifests: dict[str, tuple[int, dict[str, Any]]] = {}  # id -> (launches, latest)
        self._views_at = -1e9
        self._counts: dict[str, tuple[float, dict[str, int]]] = {}
        self._entries: dict[str, _Entry] = {}

    # -- experiments ------------------------------------------------------------------

    def _experiment_views(self) -> list[ExperimentView]:
        with self._lock:
            if time.monotonic() - self._views_at >= self.refresh_s:
                known = {v.experiment_id: v for v in self._views}
                fresh = experiments(self.store)
                # Keep the old view when its launches did not change: it caches the run IDs
                # (0.3 s to recompute for 300,000 runs).
                self._views = [
                    known[v.experiment_id]
                    if v.experiment_id in known and known[v.experiment_id].launches == v.launches
                    else v
                    for v in fresh
                ]
                self._views_at = time.monotonic()
            return list(self._views)

    def _view(self, experiment_id: str) -> ExperimentView:
        for view in self._experiment_views():
            if view.experiment_id == experiment_id:
                return view
        known = [v.experiment_id for v in self._experiment_views()]
        raise NotFound(f"experiment {experiment_id!r} is not in this store; it holds {known}")

    def counts(self, experiment_id: str) -> dict[str, int]:
        """``success``/``failed``/``pending`` of the latest launch, from the store's markers.

        Cached for ``refresh_s``; ``pending`` covers queued, running and never-run runs.
        """
        view = self._view(experiment_id)
        with self._lock:
            cached = self._counts.get(experiment_id)
            if cached is not None and time.monotonic() - cached[0] < self.refresh_s:
                return cached[1]
        return self._scan(view)[2]

    def _scan(self, view: ExperimentView) -> tuple[list[str], list[StoredState], dict[str, int]]:
        """The latest launch's run IDs, their stored states and the counts (cached)."""
        ids = view.run_ids or []
        states = self.store.states(ids)
        done, failed = states.count(StoredState.DONE), states.count(StoredState.FAILED)
        counts = {"success": done, "failed": failed, "pending": len(ids) - done - failed}
        with self._lock:
            self._counts[view.experiment_id] = (time.monotonic(), counts)
        return ids, states, counts

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment of the store: identity, launches, counts, progress, manifest."""
        out = []
        for view in self._experiment_views():
            counts = self.counts(view.experiment_id)
            total = view.total
            finished = counts["success"] + counts["failed"]
            out.append(
                {
                    "experiment_id": view.experiment_id,
                    "name": view.name,
                    "version": view.version,
                    "launches": view.launches,
                    "last_activity": view.last_activity,
                    "total": total,
                    "counts": counts,
                    "progress": None if not total else finished / total,
                    "loaded_runs": self._loaded_rows(view.experiment_id),
                    "metadata": self.manifest(view.experiment_id).get("metadata") or {},
                }
            )
        return out

    def _loaded_rows(self, experiment_id: str) -> int | None:
        """Rows of the experiment's table in memory, None before it is first loaded."""
        with self._lock:
            entry = self._entries.get(experiment_id)
        snapshot = None if entry is None else entry.snapshot
        return None if snapshot is None else len(snapshot.frame)

    def manifest(self, experiment_id: str) -> dict[str, Any]:
        """The latest manifest of an experiment (its ``metadata`` included).

        Raises:
            NotFound: the store holds no manifest of ``experiment_id``.
        """
        view = self._view(experiment_id)
        with self._lock:
            cached = self._manifests.get(experiment_id)
        if cached is not None and cached[0] == view.launches:
            return cached[1]
        manifests = self.store.list_manifests(experiment_id)
        if not manifests:
            raise NotFound(f"experiment {experiment_id!r} has no manifest in this store")
        with self._lock:
            self._manifests[experiment_id] = (view.launches, manifests[-1])
        return manifests[-1]

    # -- run tables -------------------------------------------------------------------

    def _load(self, experiment_id: str) -> Snapshot:
        markers = self.counts(experiment_id)
        import pandas as pd

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mixed-version notes are for notebooks
            results = load_results(self.store, experiment_id=experiment_id)
            frame = results.to_dataframe()
            # Which columns describe the record (status, duration, ...) rather than params
            # or metrics: asked of one run, so a field added to records is not a "metric".
            record = results[:1].to_dataframe(include_params=False, include_metrics=False)
        if frame.empty:  # a launch whose first record is not written yet
            frame = pd.DataFrame({name: pd.Series(dtype=object) for name in _EMPTY_COLUMNS})
        frame = as_categories(frame)
        return Snapshot(
            experiment_id,
            frame,
            time.time(),
            time.perf_counter() - start,
            (markers["success"], markers["failed"]),
            len(results.problems),
            tuple(str(c) for c in record.columns) or _EMPTY_COLUMNS,
        )

    def _entry(self, experiment_id: str) -> _Entry:
        with self._lock:
            return self._entries.setdefault(experiment_id, _Entry())

    def snapshot(self, experiment_id: str) -> Snapshot:
        """The experiment's run table: loaded on first use, then refreshed in the background.

        Raises:
            NotFound: the store holds no experiment ``experiment_id``.
        """
        self._view(experiment_id)
        entry = self._entry(experiment_id)
        with entry.lock:
            if entry.snapshot is None:
                entry.snapshot = self._load(experiment_id)
                entry.checked_at = time.monotonic()
                return entry.snapshot
            current = entry.snapshot
            due = time.monotonic() - entry.checked_at >= self.refresh_s
            if due and not entry.reloading:
                # The marker scan (~0.1 s at 300,000 runs) and any reload run in a thread:
                # no request waits for them, it gets the current snapshot meanwhile.
                entry.reloading = True
                threading.Thread(
                    target=self._refresh, args=(experiment_id, entry, current), daemon=True
                ).start()
            return current

    def _refresh(self, experiment_id: str, entry: _Entry, current: Snapshot) -> None:
        pause = self.refresh_s
        try:
            ids, states, counts = self._scan(self._view(experiment_id))
            markers = (counts["success"], counts["failed"])
            if markers == current.markers:
                return
            changed = changed_runs(current.frame, ids, states)
            if len(changed) > max(_MERGE_MIN, len(current.frame) // 5):
                fresh = self._load(experiment_id)
                # A full load of a large table is seconds of CPU: keep it under ~1/4 of
                # the time while a sweep keeps changing (a login node is shared).
                pause = max(pause, 3 * fresh.load_seconds)
            else:
                fresh = self._merge(current, changed, ids, markers)
            with entry.lock:
                entry.snapshot = fresh
        finally:
            with entry.lock:
                entry.reloading = False
                entry.checked_at = time.monotonic() + pause - self.refresh_s

    def _merge(
        self, current: Snapshot, changed: list[str], order: list[str], markers: tuple[int, int]
    ) -> Snapshot:
        """``current`` with the records of ``changed`` read and merged in."""
        start = time.perf_counter()
        loaded = self.store.load_records(experiment_id=current.experiment_id, run_ids=changed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = Results.from_records(loaded.records, self.store).to_dataframe()
        frame = merge(current.frame, fresh, order)
        return dataclasses.replace(
            current,
            frame=frame,
            loaded_at=time.time(),
            load_seconds=time.perf_counter() - start,
            markers=markers,
            problems=current.problems + len(loaded.problems),
            merges=current.merges + 1,
        )

    def warm(self) -> None:
        """Load every experiment's run table, the most recently launched first.

        ``metalab ui`` calls this in a background thread at start, so the first page of
        a large experiment does not wait for its table. Errors are left for the requests
        to report.
        """
        views = sorted(self._experiment_views(), key=lambda v: v.last_activity or "")
        for view in reversed(views):
            try:
                self.snapshot(view.experiment_id)
            except Exception:  # an unreadable experiment answers its own requests
                continue

    # -- runs -------------------------------------------------------------------------

    def record(self, run_id: str) -> RunRecord:
        """The stored record of one run.

        Raises:
            ExperimentError: ``run_id`` is not a hexadecimal run ID.
            NotFound: the store holds no record of it (not finished, or unknown).
        """
        if not _RUN_ID.fullmatch(run_id):
            raise ExperimentError(f"run id {run_id!r} is not a run ID (8-64 hex digits)")
        record = self.store.get_record(run_id)
        if record is None:
            raise NotFound(f"run {run_id!r} has no record in this store (unknown or unfinished)")
        return record

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's record JSON, log (its tail past 200,000 characters) and artifact list."""
        record = self.record(run_id)
        log = self.store.read_log(run_id)
        truncated = len(log) > MAX_LOG_CHARS
        doc = record.to_json()
        doc["log"] = log[-MAX_LOG_CHARS:] if truncated else log
        doc["log_truncated"] = truncated
        doc["artifacts"] = [self._artifact_info(record, a) for a in record.artifacts]
        return doc

    def _artifact_info(self, record: RunRecord, info: ArtifactInfo) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": info.name, "kind": info.kind, "size": info.size}
        doc["meta"] = info.meta
        if info.kind == "png":
            doc["url"] = f"/api/runs/{record.run_id}/artifacts/{info.name}"
        elif info.kind in _SUMMARY_KINDS:
            doc["summary"] = self._summary(record, info.name)
        else:
            doc["summary"] = f"{info.kind} artifact: not loaded by the dashboard"
        return doc

    def _summary(self, record: RunRecord, name: str) -> str:
        run = Results.from_records([record], self.store)[0]
        try:
            value = run.artifact(name)
        except Exception as exc:  # a damaged artifact must not break the run page
            return f"cannot be read: {type(exc).__name__}: {exc}"
        return summarise(value)

    def figure(self, run_id: str, name: str) -> bytes:
        """The PNG bytes of a run's figure artifact.

        Raises:
            NotFound: the run has no figure ``name``.
        """
        record = self.record(run_id)
        for info in record.artifacts:
            if info.name == name and info.kind == "png":
                return self.store.get_artifact(run_id, info)
        figures = [a.name for a in record.artifacts if a.kind == "png"]
        raise NotFound(f"run {run_id} has no figure {name!r} (has: {figures})")


def summarise(value: Any) -> str:
    """A one-line description of an artifact value: shape, dtype and range for arrays."""
    import numpy as np

    if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
        return "; ".join(f"{k}: {summarise(v)}" for k, v in value.items()) or "empty archive"
    if isinstance(value, np.ndarray):
        text = f"array shape={value.shape} dtype={value.dtype}"
        if value.size and np.issubdtype(value.dtype, np.number):
            finite = value[np.isfinite(value)] if value.dtype.kind in "fc" else value
            if finite.size:
                text += f" min={finite.min():.6g} max={finite.max():.6g} mean={finite.mean():.6g}"
        return text
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} shape={tuple(shape)}"
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."
