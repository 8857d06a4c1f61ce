"""The bundle half of :class:`~metalab.store.postgres.PostgresStore`: whole runs in bulk.

A batch of runs is read with one query per table and written in one transaction with
``executemany`` upserts (the same statements single writes use, from ``postgres_sql``),
so importing 100,000 runs costs a few hundred commits, not a few hundred thousand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from metalab.errors import StoreError, UnsafeNameError
from metalab.records import RunState
from metalab.store import postgres_sql as Q
from metalab.store.bundle import ArtifactBlob, RunBundle
from metalab.store.postgres_artifacts import PostgresArtifacts
from metalab.store.record_codec import decode_record

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["PostgresBundles"]


class PostgresBundles(PostgresArtifacts):
    """The bundle methods of PostgresStore (its record reads are declared below)."""

    if TYPE_CHECKING:

        def record_docs(
            self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
        ) -> list[tuple[str, str]]: ...

        def markers(self, run_ids: Sequence[str] | None = None) -> dict[str, str]: ...

        def derived_docs(self, run_ids: Sequence[str]) -> dict[str, str]: ...

    def read_bundles(self, run_ids: Sequence[str]) -> tuple[list[RunBundle], list[str]]:
        """Return the bundles of ``run_ids`` (in that order), one query per table.

        No run is refused whole (a row is parsed only by the destination); a tampered
        artifact row is noted in its bundle's problems.

        Raises:
            StoreError: an artifact row points at a file under artifact_root that is gone.
        """
        ids = list(run_ids)
        bundles = {run_id: RunBundle(run_id) for run_id in ids}
        for run_id, doc in self.record_docs(run_ids=ids):
            bundles[run_id].record_doc = doc
        for run_id, state in self.markers(ids).items():
            bundles[run_id].marker = state
        for run_id, doc in self.derived_docs(ids).items():
            bundles[run_id].derived_doc = doc
        logs, arts = self._q(Q.LOGS_OF_RUNS), self._q(Q.ARTIFACTS_OF_RUNS)

        def op(conn: Any) -> tuple[list[Any], list[Any]]:
            return conn.execute(logs, (ids,)).fetchall(), conn.execute(arts, (ids,)).fetchall()

        log_rows, art_rows = self._run(op)
        for run_id, text in log_rows:
            bundles[run_id].log = str(text)
        for run_id, file, name, kind, data, path in art_rows:
            if data is None:
                try:
                    data = self.read_artifact_path(run_id, str(file), path)
                except UnsafeNameError as exc:  # a tampered row: skip it, copy the rest
                    bundles[run_id].problems.append(f"artifact of run {run_id}: {exc}")
                    continue
                if data is None:
                    raise StoreError(f"artifact {file!r} of run {run_id} is missing: {path}")
            bundles[run_id].artifacts.append(ArtifactBlob(str(file), str(name), str(kind), data))
        return [bundles[run_id] for run_id in ids], []

    def write_bundles(self, bundles: Sequence[RunBundle]) -> None:
        """Upsert whole runs in one transaction (idempotent: logs are replaced, not appended).

        Raises:
            CorruptRecordError: a bundle's record text is not a valid record.
            ValueError: a bundle's derived metrics are not JSON, or its marker not a state.
        """
        record_rows, marker_rows, derived_rows, art_rows = [], [], [], []
        for bundle in bundles:
            run_id = bundle.run_id
            if bundle.record_doc is not None:
                record = decode_record(bundle.record_doc.encode(), f"record of {run_id}")
                record_rows.append(Q.record_row(record, bundle.record_doc))
            if bundle.marker is not None:
                marker_rows.append((run_id, RunState(bundle.marker).value))
            if bundle.derived_doc is not None:
                json.loads(bundle.derived_doc)  # refuse to import garbage
                derived_rows.append((run_id, bundle.derived_doc))
            for art in bundle.artifacts:
                art_rows.append(
                    self.artifact_row(run_id, art.file, art.data, name=art.name, kind=art.kind)
                )
        ids = [b.run_id for b in bundles]
        log_rows = [(b.run_id, b.log) for b in bundles if b.log]
        q = self._q

        def op(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                for statement, rows in (
                    (Q.RECORD_UPSERT, record_rows),
                    (Q.DERIVED_UPSERT, derived_rows),
                    (Q.ARTIFACT_UPSERT, art_rows),
                    # Markers after records: in one transaction the order is moot for
                    # readers, but it keeps the write order of the Store contract.
                    (Q.MARKER_UPSERT, marker_rows),
                ):
                    if rows:
                        cur.executemany(q(statement), rows)
                # Logs are replaced wholesale so that re-running a transfer never doubles them.
                cur.execute(q(Q.LOGS_DELETE), (ids,))
                if log_rows:
                    cur.executemany(q(Q.LOG_INSERT), log_rows)

        self._run(op)
