"""A local HTTP receiver for webhook deliveries, served by werkzeug in a thread, that records every request and answers
with scripted statuses; plus the receiver-side signature check of Ayrshare's documented scheme.

    with WebhookReceiver() as receiver:
        receiver.respond_with(500, 200)  # first delivery fails, the retry succeeds, later ones get 200
        ...
        first, retry = receiver.wait_for(2)
        assert signature_matches(first, ["the-secret"])
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

TIMESTAMP_HEADER = "X-Authorization-Timestamp"
SIGNATURE_HEADER = "X-Authorization-Content-SHA256"
NEW_SIGNATURE_HEADER = "X-Authorization-Content-SHA256-V2"
# A scripted answer that makes the receiver sit on the request this long (seconds) before answering 200.
HANG = "hang"
HANG_SECONDS = 3.0
DEFAULT_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived: method, path, headers (case-insensitive lookups via `header`), raw body, time."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)

    def json(self) -> object:
        return json.loads(self.body)


def signature_matches(received: ReceivedRequest, secrets: list[str] | tuple[str, ...]) -> bool:
    """True when any signature header is the hex HMAC-SHA256 of the raw body under any of `secrets`.

    Checking both headers against every secret the receiver knows is what makes a rotation's grace window safe.
    """
    signatures = [received.header(name) for name in (SIGNATURE_HEADER, NEW_SIGNATURE_HEADER)]
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), received.body, hashlib.sha256).hexdigest()
        if any(value is not None and hmac.compare_digest(value, expected) for value in signatures):
            return True
    return False


class WebhookReceiver:
    """Listens on 127.0.0.1 (a free port) and records every request, whatever its path."""

    def __init__(self, path: str = "/hooks/ayrshare", port: int = 0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._received: list[ReceivedRequest] = []
        self._script: deque[int | str | tuple[int, dict[str, str]]] = deque()
        self.default_status = 200
        # port 0 is any free one; a given port lets a test bring a receiver up where an outage left nothing listening
        self._server = make_server("127.0.0.1", port, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        """The URL to register (http to loopback, which the emulator alone accepts)."""
        return f"http://127.0.0.1:{self._server.server_port}{self.path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def respond_with(self, *answers: int | str | tuple[int, dict[str, str]]) -> None:
        """Answer the next requests with these statuses, (status, headers) or HANG in order; `default_status`
        afterwards."""
        with self._lock:
            self._script.extend(answers)

    def clear(self) -> None:
        """Forget recorded requests and scripted answers."""
        with self._lock:
            self._received.clear()
            self._script.clear()

    @property
    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = DEFAULT_WAIT_SECONDS) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; return them all, or raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} webhook requests, got {len(self._received)}")
                self._arrived.wait(remaining)
            return list(self._received)

    def _app(self, environ: dict, start_response: object) -> object:
        incoming = Request(environ)
        received = ReceivedRequest(
            method=incoming.method,
            path=incoming.path,
            headers=dict(incoming.headers.items()),
            body=incoming.get_data(),
            received_at=time.time(),
        )
        with self._arrived:
            self._received.append(received)
            answer = self._script.popleft() if self._script else self.default_status
            self._arrived.notify_all()
        if answer == HANG:
            time.sleep(HANG_SECONDS)
            answer = 200
        status, headers = answer if isinstance(answer, tuple) else (int(answer), {})
        if 300 <= status < 400:  # points back at this receiver: a client that follows it gets a 200 here
            headers = {"Location": f"{self.url}/moved", **headers}
        return Response("ok", status=status, headers=headers)(environ, start_response)
