"""The tables of a PostgreSQL store, created once per schema.

Layout (every name below lives in the store's schema)::

    records    run_id PK, experiment_id, status, task_index, replicate, started_at,
               finished_at, record JSONB (queryable), doc TEXT (the exact encoded bytes,
               so key order and the FileStore round trip are preserved), updated_at
    markers    run_id PK, state ('success' | 'failed' | 'cancelled')
    logs       id BIGSERIAL PK, run_id, chunk (one or more lines, each with its newline)
    artifacts  (run_id, file) PK, name, kind, size, data BYTEA or path (under artifact_root)
    derived    run_id PK, doc TEXT (JSON, may hold NaN like the FileStore's files)
    manifests  (experiment_id, stamp) PK, doc TEXT, submitted_at
    blobs      key PK, data BYTEA
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

__all__ = ["SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS {s}.records (
    run_id text PRIMARY KEY,
    experiment_id text NOT NULL,
    status text NOT NULL,
    task_index integer NOT NULL,
    replicate integer NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    record jsonb NOT NULL,
    doc text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS records_experiment_task
    ON {s}.records (experiment_id, task_index);
CREATE INDEX IF NOT EXISTS records_status ON {s}.records (experiment_id, status);
CREATE TABLE IF NOT EXISTS {s}.markers (
    run_id text PRIMARY KEY,
    state text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.logs (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    chunk text NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_run ON {s}.logs (run_id, id);
CREATE TABLE IF NOT EXISTS {s}.artifacts (
    run_id text NOT NULL,
    file text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    size bigint NOT NULL,
    data bytea,
    path text,
    PRIMARY KEY (run_id, file)
);
CREATE TABLE IF NOT EXISTS {s}.derived (
    run_id text PRIMARY KEY,
    doc text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.manifests (
    experiment_id text NOT NULL,
    stamp text NOT NULL,
    submitted_at text NOT NULL DEFAULT '',
    doc text NOT NULL,
    PRIMARY KEY (experiment_id, stamp)
);
CREATE TABLE IF NOT EXISTS {s}.blobs (
    key text PRIMARY KEY,
    data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
"""


def ensure_schema(conn: Any, schema: str) -> None:
    """Create the schema and its tables if missing; safe with many concurrent callers.

    Concurrent ``CREATE ... IF NOT EXISTS`` can still collide on the catalog's unique
    indexes, so creators serialise on a transaction-scoped advisory lock keyed by the
    schema name; the common case (already there) takes no DDL lock at all.
    """
    ident = sql.Identifier(schema)
    probe = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.SQL("{}.meta").format(ident).as_string(conn),),
    ).fetchone()
    if probe is not None and probe[0]:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("metalab-schema:" + schema,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(sql.SQL(statement).format(s=ident))
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO NOTHING"
            ).format(ident),
            (str(SCHEMA_VERSION),),
        )
