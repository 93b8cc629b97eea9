"""A TCP proxy the tests can cut, restore and slow down: a store endpoint that goes dead or slow mid-lease."""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Optional, Tuple


class Proxy:
    """Forwards 127.0.0.1:port to ``upstream``; ``cut()`` refuses and drops connections, ``restore()`` serves again.

    ``delay`` (seconds, 0 at first) holds every chunk a client sends for that
    long before passing it on: a slow store. ``holding`` is set when a chunk
    begins to be held (the test clears it): a request is then certainly in
    flight for ``delay`` seconds.
    """

    def __init__(self, upstream: Tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.holding = threading.Event()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._server: Optional[socket.socket] = None
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """Closes the listener (new connections are refused) and every open connection."""
        assert self._server is not None
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        except OSError:
            pass
        self._server.close()
        self._server = None
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, up]
            for a, b, slow in ((client, up, True), (up, client, False)):
                threading.Thread(target=self._pump, args=(a, b, slow), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                delay = self.delay if slow else 0.0
                if delay > 0:
                    self.holding.set()
                    time.sleep(delay)  # the slow store itself, not a wait for a condition
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
