"""The storage interface every backend (file, PostgreSQL, fallback) implements.

The write path of one run is: :meth:`Store.open_log` and :meth:`Store.put_artifact`
while the operation runs, then :meth:`Store.put_record`, then :meth:`Store.mark` — a
completion marker is only ever written after the record it vouches for is durable.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from metalab.records import ArtifactInfo, RunRecord, RunState

__all__ = ["LoadProblem", "LoadedRecords", "LogSink", "Store", "select_manifests"]


class LogSink(Protocol):
    """Where a run's log lines go as they are produced."""

    def write_line(self, line: str) -> None:
        """Persist one complete log line (without trailing newline)."""

    def close(self) -> None:
        """Flush and release the sink."""


@dataclass(frozen=True)
class LoadProblem:
    """A stored record that could not be loaded, and why."""

    location: str
    reason: str


@dataclass
class LoadedRecords:
    """Records read from a store plus the problems met on the way."""

    records: list[RunRecord] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)


def select_manifests(
    documents: Iterable[bytes | str], experiment_id: str | None
) -> list[dict[str, Any]]:
    """Parse manifest documents, keep those of ``experiment_id``, oldest first.

    Unparsable documents are skipped: a manifest documents a launch, it is never needed
    to read or resume runs.
    """
    manifests = []
    for document in documents:
        try:
            manifest = json.loads(document)
        except ValueError:
            continue
        if experiment_id is None or manifest.get("experiment_id") == experiment_id:
            manifests.append(manifest)
    manifests.sort(key=lambda m: str(m.get("submitted_at", "")))
    return manifests


class Store(ABC):
    """Durable home of manifests, run records, artifacts, logs and derived metrics."""

    @property
    @abstractmethod
    def locator(self) -> str:
        """A locator string that recreates this store (never contains a password)."""

    # -- experiments ------------------------------------------------------------------
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

    # -- run write path ---------------------------------------------------------------
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
        count failures without reading records.
        """

    # -- completion -------------------------------------------------------------------
    @abstractmethod
    def completed(self, run_ids: Sequence[str]) -> list[bool]:
        """Return, aligned with ``run_ids``, whether each run has succeeded (batched)."""

    @abstractmethod
    def failed(self, run_ids: Sequence[str]) -> list[bool]:
        """Return, aligned with ``run_ids``, whether each run's latest attempt failed."""

    # -- read path --------------------------------------------------------------------
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
    def put_derived(self, run_id: str, values: dict[str, Any]) -> None:
        """Store derived metrics of a run (kept apart from the record)."""

    @abstractmethod
    def get_derived(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Return derived metrics for the given runs (runs without any are absent)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or handles held by the store."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
