"""A TCP relay from a loopback port to the test server (not a test module).

It stands for a primary that can go away and come back (close it, open a new one on the
same port), or for a server too busy to answer: its first ``stall_first`` logins are
accepted and never answered.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Relays ``127.0.0.1:port`` (``0``: any free port) to ``target``.

    ``log`` says what became of each accepted connection: ``"relayed"``, ``"stalled"``
    (a login held silent), or ``"probe"`` (closed without a byte: a port check).
    """

    def __init__(self, target: tuple[str, int], port: int = 0, stall_first: int = 0) -> None:
        self.target = target
        self.stall_first = stall_first
        self.server = socket.create_server(("127.0.0.1", port))
        self.port: int = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = [self.server]
        self.log: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        first = b""
        if self.stall_first:
            client.settimeout(10.0)
            with contextlib.suppress(OSError):
                first = client.recv(65536)
            if not first:  # a connect-and-close port check
                self.log.append("probe")
                client.close()
                return
            client.settimeout(None)
            with self._lock:
                stall = self.log.count("stalled") < self.stall_first
                self.log.append("stalled" if stall else "relayed")
            if stall:
                return  # a login sent, never answered: it times out
        else:
            self.log.append("relayed")
        upstream = socket.create_connection(self.target)
        self.sockets.append(upstream)
        if first:
            upstream.sendall(first)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
