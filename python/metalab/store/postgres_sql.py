"""Every SQL statement a PostgreSQL store runs (its tables: see ``postgres_schema``).

``{s}`` in a statement is the store's schema, filled in as a quoted identifier by
:func:`query` (never by string formatting of a value); values are ``%s`` parameters.
Each upsert exists once, used alike by single writes and by bulk transfers
(``executemany``), so the two can never store a row differently.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from metalab.records import RunRecord

__all__ = [
    "ARTIFACTS_OF_RUNS",
    "ARTIFACT_OF_RUN",
    "ARTIFACT_UPSERT",
    "ASYNC_COMMIT",
    "BLOB_KEYS",
    "BLOB_SELECT",
    "BLOB_UPSERT",
    "CLAIMS_DELETE",
    "CLAIMS_HELD",
    "CLAIMS_RENEW",
    "CLAIMS_STEAL",
    "CLAIMS_TABLE",
    "CLAIMS_TAKE",
    "CLAIMS_TAKE_ANY",
    "DERIVED_OF_RUNS",
    "DERIVED_UPSERT",
    "DROP_SCHEMA",
    "LOGS_DELETE",
    "LOGS_OF_RUNS",
    "LOG_APPEND",
    "LOG_INSERT",
    "LOG_OF_RUN",
    "MANIFESTS",
    "MANIFEST_UPSERT",
    "MARKERS_ALL",
    "MARKERS_OF_RUNS",
    "MARKER_UPSERT",
    "PING",
    "RECORDS",
    "RECORD_DOC",
    "RECORD_UPSERT",
    "RUN_IDS",
    "STATES",
    "STATES_OF_LINES",
    "query",
    "record_row",
]


def query(schema: sql.Identifier, text: str) -> sql.Composed:
    """The statement ``text`` with ``{s}`` bound to the quoted ``schema``."""
    return sql.SQL(text).format(s=schema)


PING = "SELECT 1"
DROP_SCHEMA = "DROP SCHEMA IF EXISTS {s} CASCADE"
# The record commits without waiting for fsync; the (synchronous) marker written after it
# flushes the WAL up to and including the record.
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO off"

# -- manifests and blobs ----------------------------------------------------------------
MANIFEST_UPSERT = (
    "INSERT INTO {s}.manifests (experiment_id, stamp, submitted_at, doc) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (experiment_id, stamp) "
    "DO UPDATE SET doc = EXCLUDED.doc, submitted_at = EXCLUDED.submitted_at"
)
MANIFESTS = (
    "SELECT experiment_id, stamp, doc FROM {s}.manifests "
    "WHERE %s::text IS NULL OR experiment_id = %s ORDER BY submitted_at, stamp"
)
BLOB_UPSERT = (
    "INSERT INTO {s}.blobs (key, data) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data"
)
BLOB_SELECT = "SELECT data FROM {s}.blobs WHERE key = %s"
BLOB_KEYS = "SELECT key FROM {s}.blobs ORDER BY key"

# -- logs ---------------------------------------------------------------------------------
# Asynchronous commit: the line is in the server as soon as the statement returns (a
# worker crash keeps it) without waiting for a WAL fsync (~4 ms here vs ~0.3 ms).
LOG_APPEND = (
    "INSERT INTO {s}.logs (run_id, chunk) SELECT %s, %s "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
)
LOG_INSERT = "INSERT INTO {s}.logs (run_id, chunk) VALUES (%s, %s)"
LOG_OF_RUN = (
    "SELECT coalesce(string_agg(chunk, '' ORDER BY id), '') FROM {s}.logs WHERE run_id = %s"
)
LOGS_OF_RUNS = (
    "SELECT run_id, string_agg(chunk, '' ORDER BY id) FROM {s}.logs "
    "WHERE run_id = ANY(%s) GROUP BY run_id"
)
LOGS_DELETE = "DELETE FROM {s}.logs WHERE run_id = ANY(%s)"

# -- records and markers ----------------------------------------------------------------
RECORD_UPSERT = (
    "INSERT INTO {s}.records (run_id, experiment_id, status, task_index, replicate, "
    "started_at, finished_at, record, doc) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) "
    "ON CONFLICT (run_id) DO UPDATE SET experiment_id = EXCLUDED.experiment_id, "
    "status = EXCLUDED.status, task_index = EXCLUDED.task_index, "
    "replicate = EXCLUDED.replicate, started_at = EXCLUDED.started_at, "
    "finished_at = EXCLUDED.finished_at, record = EXCLUDED.record, "
    "doc = EXCLUDED.doc, updated_at = now()"
)
RECORD_DOC = "SELECT doc FROM {s}.records WHERE run_id = %s"
RECORDS = (
    "SELECT run_id, doc FROM {s}.records "
    "WHERE (%s::text IS NULL OR experiment_id = %s) "
    "AND (%s::text[] IS NULL OR run_id = ANY(%s)) "
    "ORDER BY experiment_id, task_index, run_id"
)
MARKER_UPSERT = (
    "INSERT INTO {s}.markers (run_id, state) VALUES (%s, %s) ON CONFLICT (run_id) "
    "DO UPDATE SET state = EXCLUDED.state, updated_at = now()"
)
MARKERS_ALL = "SELECT run_id, state FROM {s}.markers"
MARKERS_OF_RUNS = "SELECT run_id, state FROM {s}.markers WHERE run_id = ANY(%s)"
# A success marker vouches only for a record that exists (as a FileStore's done marker
# does), so the states of many runs are their markers joined with the records' keys.
STATES = (
    "SELECT m.run_id, m.state, r.run_id IS NOT NULL FROM {s}.markers AS m "
    "LEFT JOIN {s}.records AS r ON r.run_id = m.run_id WHERE m.run_id = ANY(%s)"
)
# The same answer for run IDs sent as one newline-separated text (none holds a newline):
# the done runs (the success state, %s, with a record) and the failed ones (states in %s)
# as two newline-joined texts. Per 100,000 runs this saves psycopg quoting a text[] in
# Python (~0.1 s) and decoding a row per run (~0.1 s).
STATES_OF_LINES = (
    "SELECT string_agg(m.run_id, E'\\n') FILTER (WHERE m.state = %s AND r.run_id IS NOT NULL), "
    "string_agg(m.run_id, E'\\n') FILTER (WHERE m.state = ANY(%s)) "
    "FROM {s}.markers AS m LEFT JOIN {s}.records AS r ON r.run_id = m.run_id "
    "WHERE m.run_id = ANY(string_to_array(%s, E'\\n'))"
)
RUN_IDS = (
    "SELECT run_id FROM {s}.records WHERE %s::text IS NULL OR experiment_id = %s "
    "UNION SELECT run_id FROM {s}.markers WHERE %s::text IS NULL "
    "UNION SELECT run_id FROM {s}.logs WHERE %s::text IS NULL "
    "UNION SELECT run_id FROM {s}.artifacts WHERE %s::text IS NULL "
    "UNION SELECT run_id FROM {s}.derived WHERE %s::text IS NULL ORDER BY 1"
)

# -- derived metrics and artifacts ------------------------------------------------------
DERIVED_UPSERT = (
    "INSERT INTO {s}.derived (run_id, doc) VALUES (%s, %s) "
    "ON CONFLICT (run_id) DO UPDATE SET doc = EXCLUDED.doc"
)
DERIVED_OF_RUNS = "SELECT run_id, doc FROM {s}.derived WHERE run_id = ANY(%s)"
ARTIFACT_UPSERT = (
    "INSERT INTO {s}.artifacts (run_id, file, name, kind, size, data, path) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, file) DO UPDATE SET "
    "name = EXCLUDED.name, kind = EXCLUDED.kind, size = EXCLUDED.size, "
    "data = EXCLUDED.data, path = EXCLUDED.path"
)
ARTIFACT_OF_RUN = "SELECT data, path FROM {s}.artifacts WHERE run_id = %s AND file = %s"
ARTIFACTS_OF_RUNS = (
    "SELECT run_id, file, name, kind, data, path FROM {s}.artifacts "
    "WHERE run_id = ANY(%s) ORDER BY run_id, file"
)


def record_row(record: RunRecord, doc: str) -> tuple[Any, ...]:
    """The parameters of :data:`RECORD_UPSERT` for ``record`` with exact JSON text ``doc``."""
    return (
        record.run_id,
        record.experiment_id,
        record.status.value,
        record.task_index,
        record.replicate,
        record.started_at,
        record.finished_at,
        doc,
        doc,
    )


# -- run claims (metalab.store.postgres_claims) -----------------------------------------
# Made on a store's first claim (stores made before claims existed lack it).
CLAIMS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {s}.claims (run_id text PRIMARY KEY, owner text NOT NULL, "
    "expires_at timestamptz NOT NULL)"
)
# One statement claims a batch: a free run is inserted, a lost (expired) or own claim is
# overwritten, a live other owner's row is left alone and not returned; a run already
# done (success marker and record) is never claimed. Expiry is the server's clock, the
# same for every worker host.
_NOT_DONE = (
    "NOT EXISTS (SELECT 1 FROM {s}.markers AS m JOIN {s}.records AS r "
    "ON r.run_id = m.run_id WHERE m.run_id = u.run_id AND m.state = 'success')"
)
_CLAIM_CONFLICT = (
    "ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner, "
    "expires_at = EXCLUDED.expires_at "
    "WHERE {s}.claims.expires_at <= now() OR {s}.claims.owner = EXCLUDED.owner "
    # An earlier attempt of the same SLURM array task (same launch part): it is dead.
    "OR right({s}.claims.owner, 9) = right(EXCLUDED.owner, 9) "
    "RETURNING run_id"
)
CLAIMS_TAKE = (
    "INSERT INTO {s}.claims (run_id, owner, expires_at) "
    "SELECT u.run_id, %s, now() + make_interval(secs => %s) "
    f"FROM unnest(%s::text[]) AS u(run_id) WHERE {_NOT_DONE} {_CLAIM_CONFLICT}"
)
# The same, done runs included (a launch that re-executes them: resume=False).
CLAIMS_TAKE_ANY = (
    "INSERT INTO {s}.claims (run_id, owner, expires_at) "
    "SELECT u.run_id, %s, now() + make_interval(secs => %s) "
    f"FROM unnest(%s::text[]) AS u(run_id) {_CLAIM_CONFLICT}"
)
# Taking over the claims of one owner this host saw die: only while it still holds them.
CLAIMS_STEAL = (
    "UPDATE {s}.claims AS u SET owner = %s, expires_at = now() + make_interval(secs => %s) "
    f"WHERE u.run_id = ANY(%s) AND u.owner = %s AND {_NOT_DONE} RETURNING u.run_id"
)
CLAIMS_RENEW = (
    "UPDATE {s}.claims SET expires_at = now() + make_interval(secs => %s) "
    "WHERE run_id = ANY(%s) AND owner = %s RETURNING run_id"
)
CLAIMS_DELETE = "DELETE FROM {s}.claims WHERE run_id = ANY(%s) AND owner = %s"
CLAIMS_HELD = "SELECT run_id, owner FROM {s}.claims WHERE run_id = ANY(%s) AND expires_at > now()"
