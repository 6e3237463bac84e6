"""A per-process circuit breaker in front of Ayrshare: after `threshold` consecutive outages it fails fast
(`CircuitOpen`, 503 with Retry-After) for `cooldown` seconds, then lets one probe through (closed -> open -> half-open).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ServiceError, UpstreamRefused, UpstreamUnavailable

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpen(UpstreamUnavailable):
    code = "upstream_circuit_open"
    message = "Ayrshare has been failing; the service is pausing calls to it. Try again shortly."


class CircuitBreaker:
    """Counts consecutive outages of the calls it wraps (`call(func)`); `on_state_change` hears every transition."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 10.0,
        on_state_change: Callable[[str], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.threshold = threshold
        self.cooldown = cooldown
        self.on_state_change = on_state_change
        self.clock = clock
        self.state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()

    def call(self, func: Callable[[], T]) -> T:
        is_probe = self._enter()
        try:
            result = func()
        except ServiceError as error:
            self._record(failed=_counts_as_outage(error), is_probe=is_probe)
            raise
        except BaseException:
            self._record(failed=False, is_probe=is_probe)
            raise
        self._record(failed=False, is_probe=is_probe)
        return result

    def _enter(self) -> bool:
        """Let the call through (True if it is the half-open probe) or raise `CircuitOpen`."""
        with self._lock:
            if self.state == CLOSED:
                return False
            left = self.cooldown - (self.clock() - self._opened_at)
            if self.state == OPEN and left <= 0:
                self._set(HALF_OPEN)
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            raise CircuitOpen(retry_after=max(1, int(left + 0.999)))

    def _record(self, failed: bool, is_probe: bool) -> None:
        with self._lock:
            if is_probe:
                self._probing = False
            if not failed:
                self._failures = 0
                if self.state != CLOSED:
                    self._set(CLOSED)
                return
            self._failures += 1
            if is_probe or self._failures >= self.threshold:
                self._opened_at = self.clock()
                self._set(OPEN)

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.on_state_change(state)


def _counts_as_outage(error: ServiceError) -> bool:
    """Timeouts, 5xx, 429 and malformed answers count; a refusal of our own request (bad key, code 102/189) does
    not: Ayrshare is up, our configuration is wrong, and the error message already says which setting to fix."""
    return not isinstance(error, UpstreamRefused) or error.code == "upstream_malformed"
