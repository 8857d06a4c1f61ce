"""What a store can do, as small protocols: each one the need of one kind of consumer.

:class:`~metalab.store.base.Store` composes all of them, so every backend (file,
PostgreSQL, fallback) has every capability; a function that needs only one asks for that
protocol, which says what it touches and lets the type checker (not ``isinstance`` or
``getattr``) check the store it is given::

    RunWriter       execute_task / Capture: logs, artifacts, record, marker, derived
    StatusIndex     resume, status, workers: done / failed / absent of many runs at once
    RecordReader    results and the CLI: records, artifacts, logs, derived metrics
    ColumnarReader  load_results: records as columns
    LaunchBook      runner, reconnect, workers: manifests and blobs
    BundleReader    transfer (source side): every stored byte of runs, manifests, blobs
    BundleWriter    transfer (destination side)
    RunClaims       executors: leases on runs about to execute (each run executed once)

The members are abstract so that a class *inheriting* a protocol (as ``Store`` does)
must implement each; any other object with the same methods satisfies it structurally.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from metalab.records import ArtifactInfo, RunRecord, RunState, StoredState

if TYPE_CHECKING:
    from metalab.store.base import LoadedRecords, LoadProblem, LogSink
    from metalab.store.bundle import ManifestDoc, RunBundle

__all__ = [
    "BundleReader",
    "BundleWriter",
    "ColumnarReader",
    "LaunchBook",
    "Located",
    "RecordReader",
    "RunClaims",
    "RunWriter",
    "StatusIndex",
]


class Located(Protocol):
    """Anything that can say where it is (for messages and to be rebuilt elsewhere)."""

    @property
    @abstractmethod
    def locator(self) -> str:
        """A locator string that recreates this store (never contains a password)."""


class RunWriter(Located, Protocol):
    """The write path of one run (what :func:`metalab.execution.execute_task` needs).

    Order of a run: :meth:`open_log` and :meth:`put_artifact` while it runs, then
    :meth:`put_derived`, :meth:`put_record`, and last :meth:`mark` — a marker is only
    ever written after the record it vouches for is durable.
    """

    @abstractmethod
    def open_log(self, run_id: str) -> LogSink:
        """Return a sink that persists each log line of ``run_id`` as it is written."""

    @abstractmethod
    def put_artifact(
        self, run_id: str, name: str, data: bytes, kind: str, ext: str, meta: dict[str, Any]
    ) -> ArtifactInfo:
        """Store one artifact's bytes atomically; ``name`` is already validated."""

    @abstractmethod
    def put_record(self, record: RunRecord) -> None:
        """Store (or replace) the record of ``record.run_id`` atomically."""

    @abstractmethod
    def mark(self, run_id: str, state: RunState) -> None:
        """Record the final state of a run after its record is durable.

        A success marker is what resume and status trust; a failed marker lets status
        count failures without reading records. ``RUNNING`` writes nothing.
        """

    @abstractmethod
    def put_derived(self, run_id: str, values: dict[str, Any]) -> None:
        """Store derived metrics of a run (kept apart from the record)."""


class StatusIndex(Protocol):
    """Final states of many runs in one call (one scan or one query, never one per run)."""

    @abstractmethod
    def states(self, run_ids: Sequence[str]) -> list[StoredState]:
        """Return, aligned with ``run_ids``, what the store vouches for about each run.

        ``DONE``: a success marker and its record are stored (a marker whose record is
        gone vouches for nothing: ``ABSENT``, and loading results reports it).
        ``FAILED``: the latest attempt failed or was cancelled. ``ABSENT``: neither.
        """

    @abstractmethod
    def plan_states(
        self, experiment_id: str, run_set_key: str, run_ids: Sequence[str], *, keep: bool
    ) -> list[StoredState]:
        """:meth:`states` of every run of one plan (``run_set_key``:
        :attr:`~metalab.plan.RunPlan.run_set_key`); a store that can, keeps (when
        ``keep``) a proof for :meth:`still_all_done` when every run is done."""

    @abstractmethod
    def still_all_done(self, experiment_id: str, run_set_key: str) -> bool:
        """True when the store proves, without a scan, that every run of the plan is
        still done (a :meth:`plan_states` found them all done and nothing changed
        since); False when it cannot tell (the caller asks :meth:`plan_states`)."""


class RecordReader(Protocol):
    """Reading what runs stored."""

    @abstractmethod
    def get_record(self, run_id: str) -> RunRecord | None:
        """Return one record, or ``None`` when it does not exist."""

    @abstractmethod
    def load_records(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> LoadedRecords:
        """Return every stored record (filtered), with problems for unreadable ones."""

    @abstractmethod
    def get_artifact(self, run_id: str, info: ArtifactInfo) -> bytes:
        """Return the bytes of an artifact described in the run's record.

        Raises:
            KeyError: the artifact's bytes are missing from the store.
        """

    @abstractmethod
    def read_log(self, run_id: str) -> str:
        """Return the run's log text ('' when it logged nothing)."""

    @abstractmethod
    def get_derived(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Return derived metrics for the given runs (runs without any are absent)."""


class ColumnarReader(Protocol):
    """Records as columns (the table behind ``load_results``)."""

    @abstractmethod
    def load_columns(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> tuple[dict[str, Any], list[LoadProblem]]:
        """Return the column table of the matching records and the problems met."""


class LaunchBook(Protocol):
    """Manifests (one per launch) and small named blobs (specs, launch pointers)."""

    @abstractmethod
    def put_manifest(self, experiment_id: str, manifest: dict[str, Any]) -> str:
        """Save a timestamped experiment manifest; return where it went."""

    @abstractmethod
    def list_manifests(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Return stored manifests, oldest first, optionally for one experiment."""

    @abstractmethod
    def put_blob(self, key: str, data: bytes) -> None:
        """Store a small named blob (experiment specs for workers and reconnect)."""

    @abstractmethod
    def get_blob(self, key: str) -> bytes | None:
        """Return a blob saved with :meth:`put_blob`, or ``None``."""


class BundleReader(Located, Protocol):
    """Every stored byte of a store, exact, for copying it elsewhere (the transfer source).

    Names it returns (run IDs, blob keys, manifest names) are as found in the store —
    written by whoever can write it — and are validated by the caller before use.
    """

    @abstractmethod
    def stored_run_ids(self, experiment_id: str | None = None) -> list[str]:
        """Every run with any stored data (or, filtered, with a record of the experiment)."""

    @abstractmethod
    def read_bundles(self, run_ids: Sequence[str]) -> tuple[list[RunBundle], list[str]]:
        """Return the bundles of ``run_ids`` in order, and one line per run refused whole.

        A refused run (its record is corrupt) is left out of the bundles; parts refused
        inside a bundle (a symbolic link, an unsafe artifact path) are in its ``problems``.
        """

    @abstractmethod
    def manifest_docs(
        self, experiment_id: str | None = None
    ) -> tuple[list[ManifestDoc], list[str]]:
        """Return the exact manifest documents (oldest first) and one line per refused one."""

    @abstractmethod
    def blob_keys(self) -> list[str]:
        """Return every blob key, sorted."""

    @abstractmethod
    def get_blob(self, key: str) -> bytes | None:
        """Return a blob, or ``None``."""

    @abstractmethod
    def list_manifests(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Return stored manifests, oldest first, optionally for one experiment."""


class BundleWriter(Located, Protocol):
    """Writing bundles read from another store (the transfer destination); idempotent."""

    @abstractmethod
    def write_bundles(self, bundles: Sequence[RunBundle]) -> None:
        """Store whole runs; parts are replaced, markers last (they vouch for records)."""

    @abstractmethod
    def put_manifest_doc(self, doc: ManifestDoc) -> None:
        """Store a manifest's exact text under its experiment and stamp."""

    @abstractmethod
    def put_blob(self, key: str, data: bytes) -> None:
        """Store a small named blob."""


class RunClaims(Protocol):
    """Leases on runs about to execute, so two launches never both execute one run.

    An ``owner`` is one launch (``metalab.store.claims.new_owner``); a claim lasts ``ttl``
    seconds unless renewed, and is lost at once when its owner provably died on this
    host. Every call takes many runs: one query for PostgreSQL, and for a FileStore one
    file operation per run, only for runs that execute anyway.
    """

    @abstractmethod
    def claim(
        self, run_ids: Sequence[str], owner: str, ttl: float, unless_done: bool = True
    ) -> list[str]:
        """Claim the runs for ``owner``; return those granted (free, lost, or already its).

        With ``unless_done`` a run already done is refused too, checked after the lease
        is taken: a run another launch finished since this one planned is not re-run.
        """

    @abstractmethod
    def renew(self, run_ids: Sequence[str], owner: str, ttl: float) -> list[str]:
        """Extend ``owner``'s leases for ``ttl`` more seconds; return the runs still held."""

    @abstractmethod
    def release(self, run_ids: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s claims on the runs (another owner's claims are left alone)."""

    @abstractmethod
    def claim_holders(self, run_ids: Sequence[str]) -> dict[str, str]:
        """``{run_id: owner}`` of the runs claimed (and not lost) right now."""
