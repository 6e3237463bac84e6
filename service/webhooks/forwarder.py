"""`Forwarder` signs an event per the Standard Webhooks spec and POSTs it to `WEBHOOK_FORWARD_URL`;
`DeliveryWorker` runs it over the outbox, in a thread of each instance or as `flask webhooks deliver`.

The signing is the `standardwebhooks` library's (the spec authors' own), so the team's backend can verify with it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import threading
from datetime import UTC, datetime

import requests
from standardwebhooks.webhooks import Webhook

from ..errors import ServiceError
from .outbox import Delivery, Outbox

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = (3.0, 10.0)


class ForwardFailed(Exception):
    """The team's backend did not accept the event; `reason` is short and holds nothing secret."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Forwarder:
    """One signed POST per event; a 2xx answer is the only success."""

    def __init__(self, url: str, secret: str, session: requests.Session | None = None):
        self.url = url
        self.signer = Webhook(secret)
        self.session = session or requests.Session()

    def headers_for(self, delivery: Delivery, body: str, now: datetime | None = None) -> dict[str, str]:
        moment = now or datetime.now(UTC)
        return {
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self.signer.sign(delivery.id, moment, body),
        }

    def send(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.payload(), separators=(",", ":"))
        try:
            # A redirect is not followed: after a 301-303 requests would GET the new address, and its 2xx would count an
            # event as delivered that the team's app never received.
            answer = self.session.post(
                self.url,
                data=body.encode(),
                headers=self.headers_for(delivery, body),
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise ForwardFailed("timeout") from None
        except requests.RequestException as error:
            raise ForwardFailed(f"unreachable ({type(error).__name__})") from None
        if not 200 <= answer.status_code < 300:
            raise ForwardFailed(f"HTTP {answer.status_code}")


class DeliveryWorker:
    """Delivers due events until stopped: every `poll_seconds`, or at once when `wake()` is called.

    on_result: hears "delivered", "retry" or "failed" for each attempt (the metrics).
    """

    def __init__(self, outbox: Outbox, forwarder: Forwarder, poll_seconds: float = 1.0, on_result=None):
        self.outbox = outbox
        self.forwarder = forwarder
        self.poll_seconds = poll_seconds
        self.on_result = on_result or (lambda result: None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding: tuple[str, str] | None = None  # (event id, lease owner) while a send is under way

    def run_once(self, batch: int = 50) -> int:
        """Attempt up to `batch` due events once each: how many were delivered."""
        delivered = 0
        for _ in range(batch):
            # One event per claim: its lease (300 s) outlasts the one send it covers (10 s per read, normally).
            owner, due = self.outbox.claim_due(limit=1)
            if not due:
                break
            delivery = due[0]
            self._holding = (delivery.id, owner)
            try:
                self.forwarder.send(delivery)
            except ForwardFailed as failure:
                state = self.outbox.attempt_failed(delivery.id, owner, failure.reason)
                self.on_result("failed" if state == "failed" else "retry")
                log.warning(
                    "webhook forward failed",
                    extra={"event_id": delivery.id, "reason": failure.reason, "forward_state": state},
                )
                continue
            else:
                self.outbox.delivered(delivery.id, owner)
                self.on_result("delivered")
                delivered += 1
            finally:
                self._holding = None
        return delivered

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except ServiceError as error:  # the database is down for a while: keep trying
                log.warning("webhook delivery paused", extra={"error_code": error.code})
            except Exception:  # a bug must not end the thread for good; it is logged with its traceback
                log.exception("webhook delivery failed unexpectedly")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def start(self) -> None:
        """Run in a daemon thread of this process (one per gunicorn worker)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self.run_forever, name="webhook-delivery", daemon=True)
            self._thread.start()
            # A stopping worker kills this daemon thread wherever it is: give back a lease it holds, so another
            # instance sends the event now rather than when the lease runs out (at-least-once either way).
            atexit.register(self.release_held)

    def release_held(self) -> None:
        """Give back the lease of the event being sent, if any (the process is exiting)."""
        holding, self._holding = self._holding, None
        if holding is not None:
            with contextlib.suppress(Exception):  # the database may be gone too: then the lease runs out
                self.outbox.release(*holding)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
