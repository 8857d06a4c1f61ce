"""The connection side of :class:`~metalab.store.postgres.PostgresStore`.

Short-lived connections per process (:mod:`metalab.store.pg_backoff`: opened when a
statement must run, waiting their turn on a full server, closed once idle; re-created in
a forked child, whose inherited sockets belong to the parent), the schema created on
first use, and :meth:`_run`, the
one way a statement reaches the server: a dropped connection is retried once and every
failure becomes a :class:`~metalab.errors.StoreError` with passwords masked. The
artifact, bundle and record halves of the store build on it (subclasses, not mixins
reaching into another module's privates).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from metalab.errors import StoreError, StoreUnavailableError
from metalab.store import postgres_sql as Q
from metalab.store.credentials import connect_checked
from metalab.store.pg_backoff import ShortLivedConnections, failure_text
from metalab.store.postgres_config import PostgresConfig, redact

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
except ImportError as _exc:  # pragma: no cover - depends on the install
    raise ImportError("PostgresStore needs psycopg 3: uv add 'metalab[postgres]'") from _exc

__all__ = ["PostgresConnection"]

T = TypeVar("T")


class PostgresConnection:
    """Settings, pool and statement runner of one PostgreSQL store.

    Args:
        config: connection settings (see :class:`~metalab.store.postgres_config.PostgresConfig`).
    """

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._pool: ShortLivedConnections | None = None
        self._pool_pid = -1
        self._lock = threading.Lock()
        self._schema_ready = False
        self._s = sql.Identifier(config.schema)

    @property
    def locator(self) -> str:
        """The locator of this store, without any password."""
        return self.config.locator()

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self.config.schema

    # Pickling (process executors) carries the settings, never a live pool.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    # -- connections ------------------------------------------------------------------
    def _get_pool(self) -> ShortLivedConnections:
        pid = os.getpid()
        if self._pool is not None and self._pool_pid == pid:
            return self._pool
        with self._lock:
            if self._pool is not None and self._pool_pid == pid:
                return self._pool
            # Connections inherited through fork share sockets with the parent: drop them
            # without closing (psycopg never terminates a connection of another pid).
            self._pool = None
            self._schema_ready = False
            conninfo = make_conninfo("", **self.config.conninfo_kwargs())
            # One direct connection first (waiting its turn on a full server): a dead
            # server or a refused login is said with libpq's own reason, at once.
            # It then serves the first statements.
            first = connect_checked(self.config)

            def connect() -> Any:
                return psycopg.connect(conninfo, autocommit=True)

            # Short-lived connections, not a pool holding them: hundreds of array tasks
            # must not keep the server's slots while their operations compute (pg_backoff).
            pool = ShortLivedConnections(
                connect, self.locator, self.config.pool_size, answers=self.config.port_answers
            )
            pool.adopt(first)
            self._pool, self._pool_pid = pool, pid
            weakref.finalize(self, pool.close)
            return pool

    def _run(self, op: Callable[[Any], T]) -> T:
        """Run ``op(connection)``, retrying once on a connection that died meanwhile.

        Every operation is idempotent or append-only, so one retry after a dropped
        connection (server restart) is safe. Connection failures become
        :class:`StoreUnavailableError`, anything else :class:`StoreError`, both with
        passwords masked and without the psycopg exception (which may hold the DSN).
        """
        message = ""
        for attempt in range(2):
            pool = self._get_pool()
            try:
                with pool.connection() as conn:
                    if not self._schema_ready:
                        from metalab.store.postgres_schema import ensure_schema

                        ensure_schema(conn, self.config.schema)
                        self._schema_ready = True
                    return op(conn)
            except psycopg.OperationalError as exc:
                message = redact(f"{type(exc).__name__}: {failure_text(exc)}")
                if attempt == 0:
                    pool.discard_idle()  # they may have died with this one
                    continue
            except psycopg.Error as exc:
                message = redact(f"{type(exc).__name__}: {exc}")
                raise StoreError(
                    f"PostgreSQL store {self.locator}: {message}", locator=self.locator
                ) from None
        raise StoreUnavailableError(
            f"PostgreSQL store {self.locator} unavailable: {message}", locator=self.locator
        )

    def ping(self) -> None:
        """Check the server answers (and create the schema).

        Raises:
            StoreUnavailableError: it does not.
        """
        self._run(lambda conn: conn.execute(Q.PING))

    def close(self) -> None:
        """Close the pool (a later call re-opens one)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()  # a no-op in a forked child: the parent's sockets
            self._pool = None

    def drop_schema(self) -> None:
        """Delete the schema and everything in it (tests and clean-ups)."""

        def op(conn: Any) -> None:
            conn.execute(self._q(Q.DROP_SCHEMA))

        self._run(op)
        self._schema_ready = False

    def _q(self, text: str) -> sql.Composed:
        return Q.query(self._s, text)
