"""Mutable emulator state shared by request threads: counters, request log, rate windows, link options.

One lock guards everything. Nothing slow (sleeping, signing, key parsing) happens while it is held, so
hundreds of concurrent slow requests do not serialise on it.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from emulator.knobs import UNLIMITED, Knobs, merge_knobs

RATE_WINDOW_SECONDS = 300
REQUEST_LOG_SIZE = 50
# Bound on remembered redirect/allowedSocial entries so long benchmarks cannot grow memory without limit.
MAX_REMEMBERED_LINKS = 10_000


@dataclass(frozen=True)
class LinkOptions:
    """What generateJWT remembered for the linking page of one token."""

    redirect: str | None
    allowed_social: tuple[str, ...]
    expires_at: float


def token_fingerprint(token: str) -> str:
    """Key for remembered link options; a hash so the state never holds a second copy of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class EmulatorState:
    """Thread-safe store behind the API, the linking page and the control endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._knobs = Knobs()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._generate_calls = 0
        self._by_profile: dict[str, int] = {}
        self._faults_served = 0
        self._requests: deque[dict] = deque(maxlen=REQUEST_LOG_SIZE)
        self._connections: set[str] = set()  # "address:port" of each client connection generateJWT came over
        # profile -> (window start, requests in window); fixed windows, as the vendor's headers describe.
        self._rate_windows: dict[str, tuple[float, int]] = {}
        self._links: OrderedDict[str, LinkOptions] = OrderedDict()

    # --- knobs -------------------------------------------------------------------------------------------
    @property
    def knobs(self) -> Knobs:
        with self._lock:
            return self._knobs

    def update_knobs(self, update: object) -> Knobs:
        with self._lock:
            self._knobs = merge_knobs(self._knobs, update)
            return self._knobs

    def take_fault(self, eligible: frozenset[str]) -> str | None:
        """Consume one armed fault if it belongs to `eligible`; return its name, else None."""
        with self._lock:
            knobs = self._knobs
            if knobs.fault not in eligible or knobs.fault_count == 0:
                return None
            if knobs.fault_count != UNLIMITED:
                remaining = knobs.fault_count - 1
                self._knobs = merge_knobs(knobs, {"fault_count": remaining})
                if remaining == 0:
                    self._knobs = merge_knobs(self._knobs, {"fault": None})
            self._faults_served += 1
            return knobs.fault

    # --- statistics --------------------------------------------------------------------------------------
    def record_generate_call(self, entry: dict, *, connection: str) -> None:
        """Count one generateJWT request that reached the handler (and the connection it came over: a client that
        keeps its connections open makes fewer of them than calls), and keep it in the recent-request log."""
        with self._lock:
            self._generate_calls += 1
            self._connections.add(connection)
            profile_key = entry.get("profileKey")
            if isinstance(profile_key, str):
                self._by_profile[profile_key] = self._by_profile.get(profile_key, 0) + 1
            self._requests.append(entry)

    def stats(self) -> dict:
        with self._lock:
            return {
                "generate_calls": self._generate_calls,
                "generate_connections": len(self._connections),
                "by_profile": dict(self._by_profile),
                "faults_served": self._faults_served,
                "requests": copy.deepcopy(list(self._requests)),
            }

    # --- rate limiting -----------------------------------------------------------------------------------
    def count_request(self, profile: str, now: float | None = None) -> tuple[int, int]:
        """Count a request against `profile`'s window; return (count in window, current max)."""
        now = time.time() if now is None else now
        with self._lock:
            started, count = self._rate_windows.get(profile, (now, 0))
            if now - started >= RATE_WINDOW_SECONDS:
                started, count = now, 0
            count += 1
            self._rate_windows[profile] = (started, count)
            return count, self._knobs.rate_limit_max

    def peek_request_count(self, profile: str, now: float | None = None) -> tuple[int, int]:
        """Current (count, max) without counting; for answers that must not consume the profile's quota."""
        now = time.time() if now is None else now
        with self._lock:
            started, count = self._rate_windows.get(profile, (now, 0))
            if now - started >= RATE_WINDOW_SECONDS:
                count = 0
            return count, self._knobs.rate_limit_max

    # --- link options ------------------------------------------------------------------------------------
    def remember_link(self, token: str, options: LinkOptions) -> None:
        with self._lock:
            now = time.time()
            # Drop the oldest entries first: they expire first unless lifetimes differ a lot.
            while self._links and (
                len(self._links) >= MAX_REMEMBERED_LINKS or next(iter(self._links.values())).expires_at < now
            ):
                self._links.popitem(last=False)
            self._links[token_fingerprint(token)] = options

    def link_options(self, token: str) -> LinkOptions | None:
        with self._lock:
            return self._links.get(token_fingerprint(token))

    # --- reset -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget counters, the request log, rate windows, remembered links and knobs."""
        with self._lock:
            self._knobs = Knobs()
            self._reset_counters()
