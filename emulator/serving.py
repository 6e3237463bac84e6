"""The HTTP server the CLI runs: gevent's WSGI server, with HTTP/1.1 keep-alive, a greenlet per connection, a deep
accept queue and quiet logs.

Why not werkzeug's development server, which this used until 2026-11-27: it closes every connection
(`Connection: close`), which a hosted API does not do. Each upstream call then opened a new TCP connection and a new
server thread, so the service's pooled client was never exercised as it is against Ayrshare, and on the benchmark
machine, whose two cores the emulator shares with the service, each call cost the emulator 2.0-2.1 ms of CPU against
1.4-1.5 ms here (BENCHMARKS.md, scenario 3). `python -m emulator` patches the standard library for gevent before
Flask is imported (emulator/__main__.py), so `time.sleep` (the latency knob, the "hang" fault) and the state's locks
yield to other connections.
"""

from __future__ import annotations

import logging
import socket

from gevent.pywsgi import WSGIHandler, WSGIServer

# Benchmarks open 200+ connections at once; a short listen backlog would make the kernel drop or delay SYNs, which
# shows up as client timeouts that have nothing to do with the code under test.
REQUEST_QUEUE_SIZE = 1024
# The WSGI environ key under which a handler finds its connection's socket (the "drop" fault shuts it down).
SOCKET_ENVIRON_KEY = "emulator.socket"


class _Handler(WSGIHandler):
    def handle(self) -> None:
        # The answer leaves in more than one write; with Nagle's algorithm on, each one after the first waits for the
        # client's delayed ACK (40 ms on Linux) on a kept-alive connection: +44 ms on every call, measured.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def get_environ(self) -> dict:
        environ = super().get_environ()
        environ[SOCKET_ENVIRON_KEY] = self.socket
        return environ


class EmulatorServer:
    """Bound and listening from construction; serves `app` (set it first) from `serve_forever()`.

    Binding first lets the caller learn the real port (for `--port 0`) before building the app's config, whose
    default link base must name it. Connections made in between wait in the accept queue.
    """

    def __init__(self, host: str, port: int, *, verbose: bool = False):
        self.listener = socket.create_server((host, port), backlog=REQUEST_QUEUE_SIZE)
        self.server_port = self.listener.getsockname()[1]
        self.app = None
        # No access log unless asked: the linking page's URLs carry tokens that embed the API key.
        self._access_log = logging.getLogger("emulator.access") if verbose else None

    def serve_forever(self) -> None:
        if self.app is None:
            raise RuntimeError("set EmulatorServer.app before serving")
        self._server = WSGIServer(self.listener, self.app, log=self._access_log, handler_class=_Handler)
        self._server.serve_forever()

    def server_close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop(timeout=1)
        self.listener.close()


def make_server(host: str, port: int, *, verbose: bool = False) -> EmulatorServer:
    return EmulatorServer(host, port, verbose=verbose)
