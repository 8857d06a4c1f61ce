"""Batched reads and writes of whole runs for a PostgresStore (store transfers).

A batch of runs is read with one query per table and written in one transaction with
``executemany`` upserts, so importing 100,000 runs costs a few hundred commits, not a
few hundred thousand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from metalab.errors import StoreError, UnsafeNameError
from metalab.records import RunState
from metalab.store.atomic import atomic_write
from metalab.store.bundle import ArtifactBlob, RunBundle
from metalab.store.postgres import RECORD_UPSERT, PostgresStore, record_row
from metalab.store.record_codec import decode_record

__all__ = ["read_bundles", "write_bundles"]


def read_bundles(store: PostgresStore, run_ids: Sequence[str]) -> list[RunBundle]:
    """Return the bundles of ``run_ids`` (in that order), one query per table."""
    ids = list(run_ids)
    bundles = {run_id: RunBundle(run_id) for run_id in ids}
    for run_id, doc in store.record_docs(run_ids=ids):
        bundles[run_id].record_doc = doc
    for run_id, state in store.markers(ids).items():
        bundles[run_id].marker = state
    for run_id, doc in store.derived_docs(ids).items():
        bundles[run_id].derived_doc = doc
    q = store._q
    logs = q(
        "SELECT run_id, string_agg(chunk, '' ORDER BY id) FROM {s}.logs "
        "WHERE run_id = ANY(%s) GROUP BY run_id"
    )
    arts = q(
        "SELECT run_id, file, name, kind, data, path FROM {s}.artifacts "
        "WHERE run_id = ANY(%s) ORDER BY run_id, file"
    )

    def op(conn: Any) -> tuple[list[Any], list[Any]]:
        return conn.execute(logs, (ids,)).fetchall(), conn.execute(arts, (ids,)).fetchall()

    log_rows, art_rows = store._run(op)
    for run_id, text in log_rows:
        bundles[run_id].log = str(text)
    for run_id, file, name, kind, data, path in art_rows:
        if data is None:
            try:
                data = store.read_artifact_path(run_id, str(file), path)
            except UnsafeNameError as exc:  # a tampered row: skip it, copy the rest
                bundles[run_id].problems.append(f"artifact of run {run_id}: {exc}")
                continue
            if data is None:
                raise StoreError(f"artifact {file!r} of run {run_id} is missing: {path}")
        bundles[run_id].artifacts.append(ArtifactBlob(str(file), str(name), str(kind), data))
    return [bundles[run_id] for run_id in ids]


def write_bundles(store: PostgresStore, bundles: Sequence[RunBundle]) -> None:
    """Upsert whole runs in one transaction (idempotent: logs are replaced, not appended)."""
    q = store._q
    record_rows, marker_rows, derived_rows, art_rows = [], [], [], []
    for bundle in bundles:
        if bundle.record_doc is not None:
            record = decode_record(bundle.record_doc.encode(), f"record of {bundle.run_id}")
            record_rows.append(record_row(record, bundle.record_doc))
        if bundle.marker is not None:
            marker_rows.append((bundle.run_id, RunState(bundle.marker).value))
        if bundle.derived_doc is not None:
            json.loads(bundle.derived_doc)  # refuse to import garbage
            derived_rows.append((bundle.run_id, bundle.derived_doc))
        for art in bundle.artifacts:
            path: str | None = None
            data: bytes | None = art.data
            if store.config.artifact_root and len(art.data) > store.config.inline_limit:
                path, target = store._artifact_path(bundle.run_id, art.file)
                atomic_write(target, art.data)
                data = None
            art_rows.append(
                (bundle.run_id, art.file, art.name, art.kind, len(art.data), data, path)
            )
    ids = [b.run_id for b in bundles]
    log_rows = [(b.run_id, b.log) for b in bundles if b.log]

    def op(conn: Any) -> None:
        with conn.transaction(), conn.cursor() as cur:
            if record_rows:
                cur.executemany(
                    q(RECORD_UPSERT),
                    record_rows,
                )
            if marker_rows:
                cur.executemany(
                    q(
                        "INSERT INTO {s}.markers (run_id, state) VALUES (%s, %s) "
                        "ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, "
                        "updated_at = now()"
                    ),
                    marker_rows,
                )
            if derived_rows:
                cur.executemany(
                    q(
                        "INSERT INTO {s}.derived (run_id, doc) VALUES (%s, %s) "
                        "ON CONFLICT (run_id) DO UPDATE SET doc = EXCLUDED.doc"
                    ),
                    derived_rows,
                )
            if art_rows:
                cur.executemany(
                    q(
                        "INSERT INTO {s}.artifacts (run_id, file, name, kind, size, data, path) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, file) "
                        "DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, "
                        "size = EXCLUDED.size, data = EXCLUDED.data, path = EXCLUDED.path"
                    ),
                    art_rows,
                )
            # Logs are replaced wholesale so that re-running a transfer never doubles them.
            cur.execute(q("DELETE FROM {s}.logs WHERE run_id = ANY(%s)"), (ids,))
            if log_rows:
                cur.executemany(q("INSERT INTO {s}.logs (run_id, chunk) VALUES (%s, %s)"), log_rows)

    store._run(op)
