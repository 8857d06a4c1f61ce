"""PostgresStore: runs in PostgreSQL, safe for many concurrent workers and SLURM tasks.

Every write is a single-statement upsert (``ON CONFLICT``) in its own short transaction,
so concurrent writers never lose updates and never deadlock (no transaction holds two
row locks). The connection pool (``postgres_conn``) is created lazily and re-created in a forked
child, so a store built from its locator works in worker processes. Tables: see
``postgres_schema``; statements: ``postgres_sql``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from metalab import _core
from metalab.records import RunRecord, RunState, StoredState
from metalab.store import postgres_sql as Q
from metalab.store.base import LoadedRecords, LoadProblem, Store, select_manifests
from metalab.store.bundle import ManifestDoc
from metalab.store.credentials import Credential, store_passfile
from metalab.store.postgres_bulk import PostgresBundles
from metalab.store.postgres_claims import PostgresClaims
from metalab.store.postgres_config import PostgresConfig
from metalab.store.record_codec import decode_record, encode_record, record_from_dict

__all__ = ["PostgresStore"]


class _PostgresLogSink:
    """Inserts every line as it is written, so a crash keeps all lines logged so far.

    Each line is one INSERT with an asynchronous commit: about 0.3 ms on the local server
    against ~4 ms for an fsync-ed commit (measured, see ``benches/bench_postgres.py``), so
    no line is ever held back in the worker. Only a crash of the *server* within a few
    hundred milliseconds of a line can lose it.
    """

    def __init__(self, store: PostgresStore, run_id: str) -> None:
        self._store = store
        self._run_id = run_id

    def write_line(self, line: str) -> None:
        self._store.append_log(self._run_id, line + "\n")

    def close(self) -> None:
        """Nothing is buffered, so nothing to flush."""


class PostgresStore(PostgresBundles, PostgresClaims, Store):
    """Store runs in a PostgreSQL schema (created on first use).

    Args:
        config: connection settings; build one from a locator with :meth:`from_locator`.
    """

    @classmethod
    def from_locator(cls, locator: str) -> PostgresStore:
        """Build a store from ``postgresql://user@host:port/db?schema=..&artifact_root=..``.

        Raises:
            LocatorError: the locator is malformed (shown with its password masked).
        """
        return cls(PostgresConfig.parse(locator))

    def __repr__(self) -> str:
        return f"PostgresStore({self.locator!r})"

    def connection_configs(self) -> list[PostgresConfig]:
        """This store's connection settings."""
        return [self.config]

    def portable_locator(self) -> str:
        """A locator that recreates this store in any later process of this user.

        Like :attr:`locator` it never holds the password: a store given one gets a
        private 0600 libpq password file (:func:`~metalab.store.credentials.store_passfile`)
        that the locator names with ``passfile=``.

        Raises:
            StoreError: the password file cannot be written.
        """
        credential = Credential.of(self.config)
        if credential is None:
            return self.locator
        path = str(store_passfile(credential))
        libpq = tuple(sorted({**dict(self.config.libpq), "passfile": path}.items()))
        return replace(self.config, libpq=libpq, password=None).locator()

    # -- experiments ------------------------------------------------------------------
    def put_manifest(self, experiment_id: str, manifest: dict[str, Any]) -> str:
        import datetime as dt

        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        doc = json.dumps(manifest, indent=2, default=str)
        self.put_manifest_doc(ManifestDoc(experiment_id, stamp, doc))
        return f"{self.locator}#manifests/{experiment_id}_{stamp}"

    def put_manifest_doc(self, doc: ManifestDoc) -> None:
        """Store a manifest's exact JSON text under its timestamp (idempotent)."""
        try:
            submitted = str(json.loads(doc.doc).get("submitted_at", ""))
        except (ValueError, AttributeError):
            submitted = ""
        query = self._q(Q.MANIFEST_UPSERT)
        params = (doc.experiment_id, doc.stamp, submitted, doc.doc)
        self._run(lambda conn: conn.execute(query, params))

    def manifest_docs(
        self, experiment_id: str | None = None
    ) -> tuple[list[ManifestDoc], list[str]]:
        """Return the stored manifests' exact texts, oldest first (none is ever refused)."""
        query = self._q(Q.MANIFESTS)
        rows = self._run(lambda conn: conn.execute(query, (experiment_id,) * 2).fetchall())
        return [ManifestDoc(str(e), str(t), str(d)) for e, t, d in rows], []

    def list_manifests(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        docs, _ = self.manifest_docs(experiment_id)
        return select_manifests((m.doc for m in docs), experiment_id)

    def put_blob(self, key: str, data: bytes) -> None:
        query = self._q(Q.BLOB_UPSERT)
        self._run(lambda conn: conn.execute(query, (key, data)))

    def get_blob(self, key: str) -> bytes | None:
        query = self._q(Q.BLOB_SELECT)
        row = self._run(lambda conn: conn.execute(query, (key,)).fetchone())
        return None if row is None else bytes(row[0])

    def blob_keys(self) -> list[str]:
        """Return every blob key, sorted."""
        query = self._q(Q.BLOB_KEYS)
        return [str(r[0]) for r in self._run(lambda conn: conn.execute(query).fetchall())]

    # -- run write path ---------------------------------------------------------------
    def open_log(self, run_id: str) -> _PostgresLogSink:
        return _PostgresLogSink(self, run_id)

    def append_log(self, run_id: str, chunk: str) -> None:
        """Append text (whole lines with their newlines) to a run's log."""
        query = self._q(Q.LOG_APPEND)  # asynchronous commit, see postgres_sql
        self._run(lambda conn: conn.execute(query, (run_id, chunk)))

    def put_record(self, record: RunRecord) -> None:
        self.put_record_doc(record, encode_record(record).decode())

    def put_record_doc(self, record: RunRecord, doc: str) -> None:
        """Upsert a record given its exact encoded JSON text ``doc``."""
        query = self._q(Q.RECORD_UPSERT)
        params = Q.record_row(record, doc)

        def op(conn: Any) -> None:
            # The record commits without waiting for fsync; the (synchronous) marker
            # written after it flushes the WAL up to and including the record, so a
            # marked run's record is always durable, as the Store contract demands.
            with conn.transaction():
                conn.execute(Q.ASYNC_COMMIT)
                conn.execute(query, params)

        self._run(op)

    def mark(self, run_id: str, state: RunState) -> None:
        if state is RunState.RUNNING:
            return
        query = self._q(Q.MARKER_UPSERT)
        self._run(lambda conn: conn.execute(query, (run_id, state.value)))

    # -- completion -------------------------------------------------------------------
    def markers(self, run_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Return ``{run_id: state}`` of stored markers (all, or of ``run_ids``) in one query."""
        if run_ids is None:
            query = self._q(Q.MARKERS_ALL)
            rows = self._run(lambda conn: conn.execute(query).fetchall())
        else:
            query = self._q(Q.MARKERS_OF_RUNS)
            ids = list(run_ids)
            rows = self._run(lambda conn: conn.execute(query, (ids,)).fetchall())
        return {str(r): str(s) for r, s in rows}

    def states(self, run_ids: Sequence[str]) -> list[StoredState]:
        """Done / failed / absent of each run from its marker, in one query.

        Done needs the record too (a success marker whose record row is gone vouches for
        nothing, as in a FileStore).
        """
        ids = list(run_ids)
        if not ids:
            return []
        lines = "\n".join(ids)
        if lines and lines.count("\n") == len(ids) - 1:
            return self._states_of_lines(ids, lines)
        # Run IDs holding a newline (or just one empty ID): one row per marker instead.
        query = self._q(Q.STATES)
        rows = self._run(lambda conn: conn.execute(query, (ids,)).fetchall())
        found = {str(run_id): _state_of(str(state), bool(has)) for run_id, state, has in rows}
        return [found.get(run_id, StoredState.ABSENT) for run_id in ids]

    def _states_of_lines(self, ids: list[str], lines: str) -> list[StoredState]:
        """:meth:`states` of ``ids`` (none holds a newline), sent as ``lines``, their join."""
        query = self._q(Q.STATES_OF_LINES)
        params = (RunState.SUCCESS.value, _FAILED_STATES, lines)
        done_text, failed_text = self._run(lambda conn: conn.execute(query, params).fetchone())
        # None: no such run; "" is one run, the empty ID.
        done = set() if done_text is None else set(done_text.split("\n"))
        failed = set() if failed_text is None else set(failed_text.split("\n"))
        is_done, is_failed = StoredState.DONE, StoredState.FAILED
        absent = StoredState.ABSENT
        return [is_done if r in done else is_failed if r in failed else absent for r in ids]

    # -- read path --------------------------------------------------------------------
    def get_record(self, run_id: str) -> RunRecord | None:
        doc = self.get_record_doc(run_id)
        return None if doc is None else decode_record(doc.encode(), f"{self.locator}#{run_id}")

    def get_record_doc(self, run_id: str) -> str | None:
        """Return a record's exact stored JSON text, or ``None``."""
        query = self._q(Q.RECORD_DOC)
        row = self._run(lambda conn: conn.execute(query, (run_id,)).fetchone())
        return None if row is None else str(row[0])

    def record_docs(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> list[tuple[str, str]]:
        """Return ``(run_id, exact JSON text)`` of matching records in one SQL query."""
        ids = None if run_ids is None else list(run_ids)
        query = self._q(Q.RECORDS)
        params = (experiment_id, experiment_id, ids, ids)

        def op(conn: Any) -> list[tuple[str, str]]:
            # Binary transfer of text is plain UTF-8: no escaping work on either side.
            with conn.cursor(binary=True) as cur:
                cur.execute(query, params)
                return [(str(r), str(d)) for r, d in cur.fetchall()]

        return self._run(op)

    def load_records(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> LoadedRecords:
        loaded = LoadedRecords()
        loads = json.loads
        for run_id, doc in self.record_docs(experiment_id, run_ids):
            try:
                document = loads(doc)
                loaded.records.append(record_from_dict(document))
            except (KeyError, ValueError, TypeError) as exc:
                where = f"{self.locator}#records/{run_id}"
                loaded.problems.append(LoadProblem(where, f"not a run record ({exc!r})"))
        return loaded

    def load_columns(
        self, experiment_id: str | None = None, run_ids: Iterable[str] | None = None
    ) -> tuple[dict[str, Any], list[LoadProblem]]:
        """Fetch record texts in one query and parse them into columns in parallel (Rust).

        The same columnar form as ``FileStore.load_columns``: ``load_results`` builds
        lazily materialised runs from it instead of one RunRecord per row.
        """
        prefix = f"{self.locator}#records/"
        docs = [(prefix + run_id, doc) for run_id, doc in self.record_docs(experiment_id, run_ids)]
        data = _core.record_columns_from_docs(docs, experiment_id)
        problems = [LoadProblem(where, reason) for where, reason, _ in data.pop("problems")]
        return data, problems

    def read_log(self, run_id: str) -> str:
        query = self._q(Q.LOG_OF_RUN)
        row = self._run(lambda conn: conn.execute(query, (run_id,)).fetchone())
        return "" if row is None else str(row[0])

    def put_derived(self, run_id: str, values: dict[str, Any]) -> None:
        self.put_derived_doc(run_id, json.dumps(values, allow_nan=True))

    def put_derived_doc(self, run_id: str, doc: str) -> None:
        """Store derived metrics as exact JSON text (NaN allowed, like the FileStore)."""
        query = self._q(Q.DERIVED_UPSERT)
        self._run(lambda conn: conn.execute(query, (run_id, doc)))

    def derived_docs(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Return ``{run_id: exact JSON text}`` of derived metrics, one query."""
        query = self._q(Q.DERIVED_OF_RUNS)
        ids = list(run_ids)
        rows = self._run(lambda conn: conn.execute(query, (ids,)).fetchall())
        return {str(r): str(d) for r, d in rows}

    def get_derived(self, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for run_id, doc in self.derived_docs(run_ids).items():
            try:
                found[run_id] = json.loads(doc)
            except ValueError:
                continue
        return found

    def stored_run_ids(self, experiment_id: str | None = None) -> list[str]:
        """Every run ID with any stored data (record, log, artifact, marker, derived);
        filtered: those with a record of ``experiment_id``."""
        query = self._q(Q.RUN_IDS)
        params = (experiment_id,) * 6
        rows = self._run(lambda conn: conn.execute(query, params).fetchall())
        return [str(r[0]) for r in rows]


_FAILED_STATES = [RunState.FAILED.value, RunState.CANCELLED.value]
"""Marker states that make a run failed (as :func:`_state_of` reads them)."""


def _state_of(marker: str, has_record: bool) -> StoredState:
    if marker == RunState.SUCCESS.value:
        return StoredState.DONE if has_record else StoredState.ABSENT
    if marker in (RunState.FAILED.value, RunState.CANCELLED.value):
        return StoredState.FAILED
    return StoredState.ABSENT
