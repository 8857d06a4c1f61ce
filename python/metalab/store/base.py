"""The storage interface every backend (file, PostgreSQL, fallback) implements.

:class:`Store` is the sum of the small capabilities in :mod:`metalab.store.capabilities`
(a run writer, a status index, readers, a launch book, a bundle reader/writer); code that
needs one of them is typed against that protocol, not against ``Store``.

The write path of one run is: :meth:`Store.open_log` and :meth:`Store.put_artifact`
while the operation runs, then :meth:`Store.put_record`, then :meth:`Store.mark` — a
completion marker is only ever written after the record it vouches for is durable.
"""

from __future__ import annotations

import json
from abc import ABC
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from metalab.records import RunRecord, StoredState
from metalab.store.atomic import SweepReport
from metalab.store.capabilities import (
    BundleReader,
    BundleWriter,
    ColumnarReader,
    LaunchBook,
    RecordReader,
    RunClaims,
    RunWriter,
    StatusIndex,
)

if TYPE_CHECKING:
    from metalab.store.postgres_config import PostgresConfig

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


class Store(
    RunWriter,
    StatusIndex,
    RecordReader,
    ColumnarReader,
    LaunchBook,
    BundleReader,
    BundleWriter,
    RunClaims,
    ABC,
):
    """Durable home of manifests, run records, artifacts, logs and derived metrics.

    Every member is declared (abstract) by one of the capability protocols it inherits;
    :meth:`load_columns` has a default built from :meth:`load_records`, which stores with
    a faster columnar path override.
    """

    def load_columns(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> tuple[dict[str, Any], list[LoadProblem]]:
        """Records as columns, tabulated from :meth:`load_records` (the shape of
        ``FileStore.load_columns``); problems are those of the load."""
        from metalab.store.columns import columns_from_records

        loaded = self.load_records(experiment_id, run_ids)
        return columns_from_records(loaded.records, loaded.problems)

    def plan_states(
        self, experiment_id: str, run_set_key: str, run_ids: Sequence[str], *, keep: bool
    ) -> list[StoredState]:
        """:meth:`states`; a store that can prove a finished plan cheaply overrides it
        and :meth:`still_all_done` (a FileStore keeps a done proof)."""
        return self.states(run_ids)

    def still_all_done(self, experiment_id: str, run_set_key: str) -> bool:
        """False: by default no store proves a plan done without asking its states."""
        return False

    def portable_locator(self) -> str:
        """A locator that recreates this store in any later process of this user.

        The default is :attr:`locator`; a store whose login needs a password overrides it
        (it never puts the password itself in a locator).

        Raises:
            StoreError: what the store must write for it (a password file) cannot be.
        """
        return self.locator

    def ping(self) -> None:
        """Check the store answers; a store without a server (a directory) always does.

        Raises:
            StoreUnavailableError: a server-backed store cannot be reached.
        """

    @property
    def directory(self) -> Path | None:
        """The local directory the store is, if it is one (a FileStore's root).

        What only a directory can hold beside the runs lives there: SLURM task logs, the
        files of a PostgreSQL service it advertises, that service's artifact root.
        """
        return None

    def connection_configs(self) -> list[PostgresConfig]:
        """The PostgreSQL connection settings the store logs in with (none by default)."""
        return []

    def clean_temporaries(
        self, run_ids: Iterable[str] | None = None, *, dry_run: bool = False
    ) -> SweepReport:
        """Remove temporary files left by killed writers; a store without files has none."""
        return SweepReport()

    def close(self) -> None:
        """Release connections or handles held by the store."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
