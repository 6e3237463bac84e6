"""A TCP forwarder in a thread that a test can cut, to make a real server unreachable (a network outage), or slow
down one answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut()` closes every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = True
        self._delay: tuple[bytes, float] | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def delay_reply_to(self, marker: bytes, seconds: float) -> None:
        """Hold back the answer to the next request whose bytes contain `marker` by `seconds` (once); the request
        itself goes through at once."""
        with self._lock:
            self._delay = (marker, seconds)

    def cut(self) -> None:
        with self._lock:
            self._open = False
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._open:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                self._sockets += [client, upstream]
            hold = [0.0]  # seconds the next answer on this connection waits
            for source, sink, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, outbound, hold), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outbound: bool, hold: list[float]) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if outbound:
                    with self._lock:
                        if self._delay and self._delay[0] in data:
                            hold[0], self._delay = self._delay[1], None
                elif hold[0]:
                    time.sleep(hold[0])
                    hold[0] = 0.0
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
