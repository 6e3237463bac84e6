"""The HTTP server the CLI runs: werkzeug's threaded server with a deep accept queue and quiet logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

# Benchmarks open 200+ connections at once; werkzeug's default listen backlog (128) would make the kernel
# drop or delay SYNs, which shows up as client timeouts that have nothing to do with the code under test.
REQUEST_QUEUE_SIZE = 1024


class DeepQueueThreadedServer(ThreadedWSGIServer):
    """One thread per connection (daemon threads, so a hung "hang" fault never blocks exit)."""

    request_queue_size = REQUEST_QUEUE_SIZE


class QuietRequestHandler(WSGIRequestHandler):
    """Drops werkzeug's per-request access line; the generated URLs contain tokens that embed the API key."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def _not_ready(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"emulator starting"]


def make_server(host: str, port: int, *, verbose: bool = False) -> DeepQueueThreadedServer:
    """Bind and listen now; attach the app later via `server.app`.

    Binding first lets the caller learn the real port (for `--port 0`) before building the app's config,
    whose default link base must name it. Requests arriving in between get a 503.
    """
    # An explicit level stops werkzeug from installing its own INFO handler on first use.
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.WARNING)
    handler = WSGIRequestHandler if verbose else QuietRequestHandler
    return DeepQueueThreadedServer(host, port, _not_ready, handler=handler)
