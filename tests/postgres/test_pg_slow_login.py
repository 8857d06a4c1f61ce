"""A server too slow to finish a login is load, not an outage; a closed port is an outage.

CI once lost 2 of 250 ``metalab.run`` drivers to "connection timeout expired": 250 logins
at once on two cores took the server past libpq's 5 s ``connect_timeout`` while its port
kept accepting. Here a real PostgreSQL sits behind a TCP relay that lets the first
connections stall (accepted, never answered) and relays the rest, so the store's first
login times out exactly as it did there.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from tcp_relay import Relay

from metalab.errors import StoreUnavailableError
from metalab.store import pg_backoff
from metalab.store.locator import create_store

pytestmark = pytest.mark.postgres


def _through(pg_url: str, pg_locator: str, port: int, connect_timeout: int) -> str:
    """``pg_locator`` pointed at ``port``, with the password libpq found for the server

    (a ``.pgpass`` line names the server's own port, not the relay's).
    """
    with psycopg.connect(pg_url) as conn:
        user, password = conn.info.user, conn.info.password
    parts = urlsplit(pg_locator)
    auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@"
    return parts._replace(netloc=f"{auth}127.0.0.1:{port}").geturl() + (
        f"&connect_timeout={connect_timeout}"
    )


def _target(pg_locator: str) -> tuple[str, int]:
    parts = urlsplit(pg_locator)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def test_a_login_that_times_out_on_a_listening_port_is_tried_again(
    pg_url: str, pg_locator: str
) -> None:
    with Relay(_target(pg_locator), stall_first=2) as relay:
        store = create_store(_through(pg_url, pg_locator, relay.port, connect_timeout=1))
        started = time.monotonic()
        try:
            store.ping()
        finally:
            store.close()
        took = time.monotonic() - started
    # Two logins ran into the 1 s timeout, each followed by a probe that found the port
    # open; the third login got through the relay.
    logins = [entry for entry in relay.log if entry != "probe"]
    assert logins[:3] == ["stalled", "stalled", "relayed"], relay.log
    assert relay.log.count("probe") == 2, relay.log
    assert 2.0 <= took < 30.0, took


def test_a_closed_port_is_an_outage_said_at_once(pg_url: str, pg_locator: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]  # free once closed: nothing listens there
    store = create_store(_through(pg_url, pg_locator, closed_port, connect_timeout=5))
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="refused"):
        store.ping()
    assert time.monotonic() - started < 2.0


def test_a_port_that_stops_answering_is_not_waited_for() -> None:
    """A timeout with nothing listening any more (host gone) is raised on the first try."""
    slept: list[float] = []
    calls = 0

    def connect() -> None:
        nonlocal calls
        calls += 1
        raise psycopg.OperationalError("connection timeout expired")

    with pytest.raises(psycopg.OperationalError, match="timeout expired") as caught:
        pg_backoff.connect_with_backoff(
            connect, "postgresql://x@h/db", sleep=slept.append, answers=lambda: False
        )
    assert (calls, slept) == (1, [])
    assert pg_backoff.failure_text(caught.value).endswith(
        "metalab: tried once over 0.0 s; its port did not answer"
    )
    # Without a probe (the caller cannot tell), a timeout is never retried either.
    with pytest.raises(psycopg.OperationalError):
        pg_backoff.connect_with_backoff(connect, "postgresql://x@h/db", sleep=slept.append)
    assert (calls, slept) == (2, [])


def test_a_slow_server_is_waited_for_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past :data:`SLOW_PATIENCE_S` the last timeout is raised, saying how often it tried."""
    monkeypatch.setattr(pg_backoff, "SLOW_PATIENCE_S", 0.3)
    calls = 0

    def connect() -> None:
        nonlocal calls
        calls += 1
        raise psycopg.OperationalError("connection timeout expired")

    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as caught:
        pg_backoff.connect_with_backoff(connect, "postgresql://x@h/db", answers=lambda: True)
    assert time.monotonic() - started < 5.0
    assert calls > 1
    assert any(f"tried {calls} times" in note for note in caught.value.__notes__)
    # The store's error carries it (one line), and that the port was up all along.
    said = pg_backoff.failure_text(caught.value)
    assert said.startswith("connection timeout expired metalab: tried "), said
    assert said.endswith("; its port accepted connections"), said


def test_port_answers_tells_a_listener_from_a_closed_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert pg_backoff.port_answers("127.0.0.1", port)
        assert pg_backoff.port_answers("/nonexistent,127.0.0.1", port)
    assert not pg_backoff.port_answers("127.0.0.1", port)


def test_port_answers_waits_out_a_full_accept_queue() -> None:
    """A postmaster starved of CPU lets its accept queue fill; the kernel then drops SYNs.

    The probe must outlast the first SYN retransmission (1 s after the first SYN, the next
    2 s later), or a port that is up is taken for a silent host: CI lost 4 of 250 drivers
    so. Here a listener with a backlog of 0 holds one connection unaccepted, so the
    probe's first SYN is dropped; the queue is drained 1.5 s later.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=2)
        timer = threading.Timer(1.5, lambda: listener.accept()[0].close())
        timer.start()
        started = time.monotonic()
        try:
            assert pg_backoff.port_answers("127.0.0.1", port)
        finally:
            timer.join()
            filler.close()
        assert time.monotonic() - started > 1.0  # it was indeed held up
