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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import quote, urlsplit

import psycopg
import pytest

from metalab.errors import StoreUnavailableError
from metalab.store import pg_backoff
from metalab.store.locator import create_store

pytestmark = pytest.mark.postgres


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def stalling_relay(target: tuple[str, int], stall_first: int) -> Iterator[tuple[int, list[str]]]:
    """A loopback port whose first ``stall_first`` connections are held silent.

    Yields the port and a log of what happened to each accepted connection.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log: list[str] = []
    held: list[socket.socket] = []
    stop = threading.Event()
    lock = threading.Lock()

    def handle(client: socket.socket) -> None:
        client.settimeout(10.0)
        try:
            first = client.recv(65536)
        except OSError:
            first = b""
        if not first:  # a connect-and-close probe (pg_backoff.port_answers)
            log.append("probe")
            client.close()
            return
        client.settimeout(None)
        with lock:
            stall = sum(entry == "stalled" for entry in log) < stall_first
            log.append("stalled" if stall else "relayed")
        if stall:
            held.append(client)  # a login sent, never answered: it times out
            return
        upstream = socket.create_connection(target)
        upstream.sendall(first)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, log
    finally:
        stop.set()
        listener.close()
        for sock in held:
            sock.close()


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
    with stalling_relay(_target(pg_locator), stall_first=2) as (port, log):
        store = create_store(_through(pg_url, pg_locator, port, connect_timeout=1))
        started = time.monotonic()
        try:
            store.ping()
        finally:
            store.close()
        took = time.monotonic() - started
    # Two logins ran into the 1 s timeout, each followed by a probe that found the port
    # open; the third login got through the relay.
    logins = [entry for entry in log if entry != "probe"]
    assert logins[:3] == ["stalled", "stalled", "relayed"], log
    assert log.count("probe") == 2, log
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

    with pytest.raises(psycopg.OperationalError, match="timeout expired"):
        pg_backoff.connect_with_backoff(
            connect, "postgresql://x@h/db", sleep=slept.append, answers=lambda: False
        )
    assert (calls, slept) == (1, [])
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


def test_port_answers_tells_a_listener_from_a_closed_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert pg_backoff.port_answers("127.0.0.1", port)
        assert pg_backoff.port_answers("/nonexistent,127.0.0.1", port)
    assert not pg_backoff.port_answers("127.0.0.1", port)
