"""Connections to a PostgreSQL server that may be full: short-lived, opened with backoff.

A SLURM array with ``max_concurrent=500`` starts hundreds of writers against a server
that admits ``max_connections`` (100 by default) minus its reserved slots. A worker that
kept a connection for its whole life (as a pool does) would hold one of those slots while
its operation computes, and the workers past the limit would fail. So a process here:

* opens a connection only when a statement must run, and closes it once it has been idle
  for :data:`LINGER_S` (the writes of one run come in a burst: one connection serves
  them all, and none is held while the operation computes);
* when the server says it is full (SQLSTATE 53300 "too many clients already", the
  per-role/per-database limits, PgBouncer's ``max_client_conn``, or "starting up"), waits
  with exponential backoff and full jitter and tries again, for up to
  :data:`FULL_PATIENCE_S`: a full server is ordinary load, the worker waits its turn;
* says nothing while it waits, except one line on stderr per process if the wait grows
  long (:data:`SAY_AFTER_S`), so 500 waiting workers cannot flood the logs.

A server that is *down* (connection refused, no host answering) is not waited for: the
store reports it at once, so a FallbackStore can fail over. A login that runs past
libpq's ``connect_timeout`` while the server's port still accepts connections is load
too (a few hundred logins at once on a small machine: the server forks and
authenticates each in turn), so it is tried again, for up to :data:`SLOW_PATIENCE_S`.
"""

from __future__ import annotations

import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "FULL_PATIENCE_S",
    "LINGER_S",
    "SAY_AFTER_S",
    "SLOW_PATIENCE_S",
    "ShortLivedConnections",
    "connect_with_backoff",
    "failure_text",
    "port_answers",
    "server_full",
    "timed_out",
]

LINGER_S = 0.05
"""Seconds an idle connection is kept for the next statement before it is closed."""
FULL_PATIENCE_S = 900.0
"""Longest wait for a full server to admit a connection before the store gives up."""
SLOW_PATIENCE_S = 120.0
"""Longest wait for a server that accepts connections but is too slow to log in."""
SAY_AFTER_S = 30.0
"""A wait longer than this is said once per process on stderr (why a task is slow)."""
_FIRST_S, _FACTOR, _CAP_S = 0.05, 2.0, 5.0

# libpq's texts (SQLSTATE is not set on connection errors, so the wording is all there
# is): 53300 too_many_connections (both wordings), 53400-style per-role and per-database
# limits, PgBouncer's pool limits, and 57P03 cannot_connect_now (starting up, recovery).
_FULL = re.compile(
    r"too many clients already|remaining connection slots are reserved|"
    r"too many connections for (?:role|database)|no more connections allowed|"
    r"the database system is (?:starting up|not yet accepting connections|in recovery mode)",
    re.IGNORECASE,
)

# psycopg's own timeout ("connection timeout expired") and libpq's ("timeout expired").
_TIMED_OUT = re.compile(r"timeout expired", re.IGNORECASE)
# Where libpq looks for a server's Unix socket when no host is given (Debian's default
# first, then PostgreSQL's own).
_DEFAULT_SOCKET_DIRS = ("/var/run/postgresql", "/tmp")
# Long enough for two of the kernel's SYN retransmissions (sent 1 s and 3 s after the
# first): a postmaster starved of CPU by hundreds of logins lets its accept queue fill,
# and the kernel then drops new SYNs, so a port that is up can take >1 s to answer.
# A closed port still answers "refused" at once; only a silent host costs the full wait.
_PROBE_TIMEOUT_S = 3.5

_NOTE_PREFIX = "metalab: tried "
_said: set[str] = set()
_said_lock = threading.Lock()


def server_full(reason: str) -> bool:
    """True when a connection error says the server is full (or starting), not down."""
    return _FULL.search(reason) is not None


def timed_out(reason: str) -> bool:
    """True when a connection error says the login ran past ``connect_timeout``."""
    return _TIMED_OUT.search(reason) is not None


def failure_text(exc: BaseException) -> str:
    """One line: the error's text and the notes :func:`connect_with_backoff` added to it

    (how often and how long it was tried), whitespace folded (libpq's texts span lines).
    """
    notes = [n for n in getattr(exc, "__notes__", ()) if n.startswith(_NOTE_PREFIX)]
    return " ".join(" ".join([str(exc), *notes]).split())


def port_answers(host: str | None, port: int | None) -> bool:
    """True when some server address accepts a connection (the server is up, if slow).

    Only the transport is tried (a TCP connect, or a Unix socket connect), closed at once
    without a byte sent, so the server does not even log it. ``host`` may be a libpq host
    list (``a,b``), a Unix socket directory, or ``None`` (``PGHOST``, else libpq's default
    socket directories); ``port`` defaults to ``PGPORT``, else 5432.
    """
    number = port or int(os.environ.get("PGPORT", "") or 5432)
    given = host or os.environ.get("PGHOST", "")
    hosts = [h for h in given.split(",") if h] if given else list(_DEFAULT_SOCKET_DIRS)
    for name in hosts:
        try:
            if name.startswith("/"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(_PROBE_TIMEOUT_S)
                    sock.connect(f"{name}/.s.PGSQL.{number}")
            else:
                socket.create_connection((name, number), timeout=_PROBE_TIMEOUT_S).close()
        except OSError:
            continue
        return True
    return False


def _say_once(key: str, message: str) -> None:
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    print(message, file=sys.stderr, flush=True)


def connect_with_backoff(
    connect: Callable[[], Any],
    shown: str,
    *,
    patience: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    answers: Callable[[], bool] | None = None,
) -> Any:
    """``connect()``, retried with exponential backoff and full jitter while the server is busy.

    Busy is full (waited for up to ``patience``) or, when ``answers`` says the server's
    port still accepts connections, too slow to finish a login within ``connect_timeout``
    (waited for up to :data:`SLOW_PATIENCE_S`).

    Args:
        connect: opens one connection; raises ``psycopg.OperationalError`` on failure.
        shown: the locator (without password) for the one line said on a long wait.
        patience: longest total wait in seconds (default :data:`FULL_PATIENCE_S`).
        sleep: how to wait (tests pass a recorder).
        answers: whether the server accepts connections at all (e.g.
            :func:`port_answers`); without it a timeout is never retried.

    Returns:
        What ``connect()`` returned.

    Raises:
        psycopg.OperationalError: the server is down or refused the login (not retried),
            or was still busy after its patience (the last error, with a note of how
            long and how often it was tried).
    """
    import psycopg

    limit = FULL_PATIENCE_S if patience is None else patience
    started = time.monotonic()
    delay = _FIRST_S
    attempts = 0
    # Each process draws its own jitter: workers refused together must not retry together.
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    while True:
        attempts += 1
        try:
            return connect()
        except psycopg.OperationalError as exc:
            waited = time.monotonic() - started
            reason = str(exc)
            probed = ""
            if server_full(reason):
                busy, wait_limit = "full (too many clients)", limit
            elif timed_out(reason) and answers is not None:
                up = answers()
                probed = "; its port accepted connections" if up else "; its port did not answer"
                busy = "slow to log in" if up else ""
                wait_limit = min(limit, SLOW_PATIENCE_S) if up else 0.0
            else:
                busy, wait_limit = "", 0.0
            if not busy or waited >= wait_limit:
                if attempts > 1 or probed:
                    # Said in the store's error (failure_text): why it was not waited for.
                    times = "once" if attempts == 1 else f"{attempts} times"
                    exc.add_note(f"{_NOTE_PREFIX}{times} over {waited:.1f} s{probed}")
                raise
            if waited >= SAY_AFTER_S:
                _say_once(
                    shown,
                    f"metalab: PostgreSQL store {shown} is {busy}; "
                    f"waiting for a free connection ({waited:.0f} s so far)",
                )
            sleep(min(rng.uniform(0.0, delay), max(wait_limit - waited, 0.0)))
            delay = min(delay * _FACTOR, _CAP_S)


class ShortLivedConnections:
    """At most ``size`` connections of one process, each closed once idle for ``linger`` s.

    Args:
        connect: opens one autocommit connection (called through
            :func:`connect_with_backoff`).
        shown: the locator without password, for messages.
        size: most connections in use at once (threads beyond it wait).
        linger: seconds an idle connection is kept for the next statement.
        answers: whether the server's port accepts connections (see
            :func:`connect_with_backoff`).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        shown: str,
        size: int,
        linger: float = LINGER_S,
        answers: Callable[[], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._shown = shown
        self._answers = answers
        self._linger = linger
        self._slots = threading.BoundedSemaphore(size)
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[tuple[Any, float]] = []  # (connection, idle since), newest last
        self._reaper: threading.Thread | None = None
        self._closed = False
        self.pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for a burst of statements; given back (or closed) after it."""
        with self._slots:
            conn = self._take_idle()
            if conn is None:
                conn = connect_with_backoff(self._connect, self._shown, answers=self._answers)
            try:
                yield conn
            finally:
                self._give_back(conn)

    def adopt(self, conn: Any) -> None:
        """Keep an already open connection as idle (it closes after ``linger`` like any)."""
        self._give_back(conn)

    def _take_idle(self) -> Any:
        with self._cond:
            while self._idle:
                conn, _ = self._idle.pop()
                if not conn.closed and not conn.broken:
                    return conn
        return None

    def _give_back(self, conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        with self._cond:
            if reusable and not self._closed:
                self._idle.append((conn, time.monotonic()))
                # No notify: a connection given back expires after every one already
                # idle, so a sleeping reaper wakes in time (waking it per statement cost
                # ~0.1 ms of thread switching).
                self._start_reaper()
                return
        conn.close()

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name="metalab-pg-idle-close", daemon=True
            )
            self._reaper.start()

    def _reap(self) -> None:
        """Close connections idle for ``linger`` s; end when none is left."""
        while True:
            with self._cond:
                if not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                expired = [c for c, since in self._idle if now - since >= self._linger]
                self._idle = [(c, s) for c, s in self._idle if now - s < self._linger]
                if not expired:
                    oldest = min(s for _, s in self._idle)
                    self._cond.wait(timeout=max(oldest + self._linger - now, 0.001))
                    continue
            for conn in expired:
                conn.close()

    def discard_idle(self) -> None:
        """Close every idle connection (after an error that may have killed them)."""
        with self._cond:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def close(self) -> None:
        """Close the idle connections; connections in use close when given back."""
        if os.getpid() != self.pid:
            return  # inherited through fork: the parent owns these sockets
        with self._cond:
            self._closed = True
        self.discard_idle()
