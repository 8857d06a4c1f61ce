"""The connection side of :class:`~metalab.store.postgres.PostgresStore`.

One lazily created pool per process (re-created in a forked child, whose inherited
sockets belong to the parent), the schema created on first use, and :meth:`_run`, the
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
from metalab.store.credentials import connect_once
from metalab.store.postgres_config import PostgresConfig, quiet_pool_log, redact

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as _exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "PostgresStore needs psycopg 3 and psycopg_pool: uv add 'metalab[postgres]'"
    ) from _exc

__all__ = ["PostgresConnection"]

T = TypeVar("T")


def _close_pool_soon(pool: Any, owner_pid: int, wait: bool = True) -> None:
    if os.getpid() != owner_pid:
        return  # inherited through fork: the parent owns these connections
    closer = threading.Thread(target=pool.close, name="metalab-pool-close", daemon=True)
    closer.start()
    if not wait or threading.current_thread() is not threading.main_thread():
        return
    closer.join(timeout=5.0)


class PostgresConnection:
    """Settings, pool and statement runner of one PostgreSQL store.

    Args:
        config: connection settings (see :class:`~metalab.store.postgres_config.PostgresConfig`).
    """

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._pool: Any = None
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
    def _get_pool(self) -> Any:
        pid = os.getpid()
        if self._pool is not None and self._pool_pid == pid:
            return self._pool
        with self._lock:
            if self._pool is not None and self._pool_pid == pid:
                return self._pool
            # A pool inherited through fork shares sockets with the parent: drop it
            # without closing (closing would hang up the parent's connections).
            self._pool = None
            self._schema_ready = False
            kwargs = self.config.conninfo_kwargs()
            conninfo = make_conninfo("", **kwargs)
            # One direct connection first: a pool retries a refused login or a dead
            # server in the background, logging each attempt, until its timeout says
            # only "couldn't get a connection". libpq's own reason is in the probe's.
            connect_once(self.config)
            quiet_pool_log()
            timeout = float(kwargs.get("connect_timeout", 5)) + 1.0
            pool = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=self.config.pool_size,
                kwargs={"autocommit": True},
                timeout=timeout,
                open=False,
                name=f"metalab-{self.config.schema}",
            )
            pool.open(wait=False)
            self._pool, self._pool_pid = pool, pid
            # Close the pool when the store is dropped or at exit, from a fresh thread:
            # left to its own __del__, a pool collected on one of its worker threads
            # tries to join that thread and fails.
            weakref.finalize(self, _close_pool_soon, pool, pid)
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
            except PoolTimeout:
                # The pool waited its timeout for a connection: either every connection
                # is busy (then retry once) or the server went away, and the pool only
                # knows "couldn't get a connection". Drop it (which also ends its logged
                # reconnect attempts); the next pool probes first and says why.
                self._discard_pool(pool)
                if attempt == 0:
                    continue
                # Ask the server directly why (raises with libpq's reason if it is down).
                connect_once(self.config)
                message = "no connection became free within the pool timeout (server busy?)"
            except psycopg.OperationalError as exc:
                message = redact(f"{type(exc).__name__}: {exc}")
                if attempt == 0:
                    pool.check()  # drop every dead idle connection before the retry
                    continue
            except psycopg.Error as exc:
                message = redact(f"{type(exc).__name__}: {exc}")
                raise StoreError(
                    f"PostgreSQL store {self.locator}: {message}", locator=self.locator
                ) from None
        raise StoreUnavailableError(
            f"PostgreSQL store {self.locator} unavailable: {message}", locator=self.locator
        )

    def _discard_pool(self, pool: Any) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        _close_pool_soon(pool, self._pool_pid, wait=False)

    def ping(self) -> None:
        """Check the server answers (and create the schema).

        Raises:
            StoreUnavailableError: it does not.
        """
        self._run(lambda conn: conn.execute(Q.PING))

    def close(self) -> None:
        """Close the pool (a later call re-opens one)."""
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None

    def drop_schema(self) -> None:
        """Delete the schema and everything in it (tests and clean-ups)."""

        def op(conn: Any) -> None:
            conn.execute(self._q(Q.DROP_SCHEMA))

        self._run(op)
        self._schema_ready = False

    def _q(self, text: str) -> sql.Composed:
        return Q.query(self._s, text)
