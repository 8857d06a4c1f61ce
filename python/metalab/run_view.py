"""One run of an experiment: its record, artifacts, log, figures and derived metrics.

A :class:`Run` is either built from a record in memory (``Run(record, store)``) or handed
out by a column table (:mod:`metalab.column_table`) with only its ID and status known;
such a run reads its record from the store the first time something needs it, so
indexing one row of 300,000 loaded runs reads one record file, not 300,000.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from metalab.capture.serializers import AllowPickle, deserialize
from metalab.errors import ExperimentError, StoreError
from metalab.html import PngImage, run_html
from metalab.records import FailureReason, RunRecord, RunState

if TYPE_CHECKING:
    from metalab.store.base import Store

__all__ = ["Run", "StaleFlags"]


class StaleFlags(Protocol):
    """Where a run from a column table looks up whether it is stale (the table itself)."""

    def stale_at(self, row: int) -> bool:
        """True when ``row`` was computed by other code than its experiment's latest launch."""


class Run:
    """One run's record with lazy access to its artifacts, log and derived metrics."""

    def __init__(
        self, record: RunRecord, store: Store, derived: dict[str, Any] | None = None
    ) -> None:
        self._record: RunRecord | None = record
        self._run_id = record.run_id
        self._status = record.status
        self._store = store
        self._derived = derived
        self._flags: StaleFlags | None = None
        self._row = -1

    @classmethod
    def lazy(cls, run_id: str, status: str, store: Store, flags: StaleFlags, row: int) -> Run:
        """A run whose record is read from ``store`` on first use (row ``row`` of a table).

        ``flags`` answers :attr:`is_stale` from launch manifests, without the record.
        """
        run = cls.__new__(cls)
        run._record = None
        run._run_id = run_id
        run._status = RunState(status)
        run._store = store
        run._derived = None
        run._flags = flags
        run._row = row
        return run

    @property
    def record(self) -> RunRecord:
        """The full record (read from the store once, for a run handed out by a table).

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
    def record_loaded(self) -> bool:
        """True when the record is in memory (reading :attr:`record` costs nothing)."""
        return self._record is not None

    @property
    def run_id(self) -> str:
        """The stable run ID."""
        return self._run_id

    @property
    def status(self) -> RunState:
        """success, failed, cancelled or running."""
        return self._status if self._record is None else self._record.status

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
    def reason(self) -> FailureReason | None:
        """Why the run did not succeed (``timeout``, ``out_of_memory``...), or ``None``."""
        return self.record.reason

    @property
    def is_stale(self) -> bool:
        """True when another version of the operation computed this run.

        "Now" is the code of the experiment's latest launch (its manifest's code hash;
        another metalab major version counts too). False when they match, when no
        launch is recorded to compare with, or for a run built alone from a record.
        Re-run stale runs with ``metalab.run(exp, rerun="stale")``.
        """
        return self._flags is not None and self._flags.stale_at(self._row)

    @property
    def derived(self) -> dict[str, Any]:
        """Stored derived metrics (``{}`` when none were computed)."""
        if self._derived is None:
            self._derived = self._store.get_derived([self.run_id]).get(self.run_id, {})
        return self._derived

    def remember_derived(self, values: dict[str, Any]) -> None:
        """Keep ``values`` as :attr:`derived` (just read or written in a batch for many runs)."""
        self._derived = values

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

    def figure(self, name: str) -> PngImage:
        """The stored figure ``name`` (``capture.figure``) as an image a notebook displays.

        A :class:`~metalab.html.PngImage`: the PNG ``bytes`` with ``_repr_png_``.

        Raises:
            KeyError: the run stored no figure ``name`` (the message lists its figures).
            ExperimentError: ``name`` is an artifact of another kind (use ``artifact()``).
        """
        infos = {a.name: a for a in self.record.artifacts}
        figures = sorted(n for n, a in infos.items() if a.kind == "png")
        if name not in infos:
            raise KeyError(f"run {self.run_id} has no figure {name!r} (has: {figures})")
        if infos[name].kind != "png":
            raise ExperimentError(
                f"artifact {name!r} of run {self.run_id} is a {infos[name].kind!r} artifact, "
                f"not a figure; load it with run.artifact({name!r})"
            )
        image: PngImage = self.artifact(name)
        return image

    @property
    def log(self) -> str:
        """The run's log text."""
        return self._store.read_log(self.run_id)

    def __repr__(self) -> str:
        return f"Run({self.run_id[:12]}, {self.status.value}, params={self.params})"

    def _repr_html_(self) -> str:
        """Params, metrics, status, error and artifacts as HTML (for notebooks)."""
        return run_html(self.record)
