"""`LinkBroker.get_link(key, fetch)`: a cached link while it has more than the margin left, else one fetch per burst.

Concurrent misses in one process share one flight; across processes the flight's leader takes the key's fetch lock
and the others poll the store until the link appears, the holder's failure marker does (then they answer the same
error), or the lock frees. With the store unavailable it fetches directly; when Ayrshare fails, a link with at least
`stale_min` seconds left is served instead (stale-if-error), never an expired one.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..errors import ServiceError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from ..upstream import Link
from .store import FetchLock, Record, StoreUnavailable

POLL_SECONDS = 0.01  # how often a waiting process looks for the holder's result
ERROR_MARKER_SECONDS = 1.0
# Ayrshare failing (rather than our caller being refused): these are shared with waiters and allow stale-if-error.
_UPSTREAM_FAILURES = (UpstreamRefused, UpstreamUnavailable, UpstreamTimeout)

Fetch = Callable[[float], Link]  # called with the monotonic deadline the upstream call must finish by


class LinkStore(Protocol):
    """What the broker needs from a store (service/links/store.py); any method may raise `StoreUnavailable`."""

    def read(self, key: str) -> Record | None: ...
    def read_with_marker(self, key: str) -> tuple[Record | None, str | None]: ...
    def write(self, key: str, link: Link, ttl_seconds: float) -> bool: ...
    def write_marker(self, key: str, marker: str, ttl_seconds: float) -> None: ...
    def lock(self, key: str, ttl_seconds: float) -> FetchLock: ...


class _Flight:
    """One miss being resolved in this process; the other requests for the key wait on `done`."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.link: Link | None = None
        self.error: BaseException | None = None


@dataclass
class LinkBroker:
    """Gets links through the store with the freshness rule, single-flight and stale-if-error described above.

    `min_remaining`: seconds a cached link must have left to be served; `stale_min`: the least a stale link may have;
    `lock_ttl`: how long a crashed holder can block others; `request_seconds`: the bound on a whole request, waiting
    included; `on_event`: hears "wait", "redis_error", "stale" and "cache_rejected" (for metrics); `url_ok`: the check a
    stored URL must pass to be served (else it is a miss).
    """

    store: LinkStore
    min_remaining: float
    stale_min: float
    lock_ttl: float
    request_seconds: float = 30.0
    on_event: Callable[[str], None] = lambda event: None
    url_ok: Callable[[str], bool] = lambda url: True
    _flights: dict[str, _Flight] = field(default_factory=dict)
    _flights_lock: threading.Lock = field(default_factory=threading.Lock)

    def get_link(self, key: str, fetch: Fetch) -> Link:
        link = self._read(key, self.min_remaining)
        if link is not None:
            return link
        return self._share_flight(key, fetch, time.monotonic() + self.request_seconds)

    # -- in this process ---------------------------------------------------------------------------------------
    def _share_flight(self, key: str, fetch: Fetch, deadline: float) -> Link:
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if leader:
            try:
                flight.link = self._fetch_once(key, fetch, deadline)
                return flight.link
            except BaseException as error:
                flight.error = error
                raise
            finally:
                with self._flights_lock:
                    del self._flights[key]
                flight.done.set()
        self.on_event("wait")
        if not flight.done.wait(timeout=max(0.0, deadline - time.monotonic())):
            return self._stale_or_raise(key, UpstreamTimeout())
        if flight.error is not None:
            raise _own_copy(flight.error)
        # The leader's fetch was for everyone; for the others it is a shared answer, not their own upstream call.
        return flight.link if flight.link.cached else replace(flight.link, source="shared")

    # -- across processes --------------------------------------------------------------------------------------
    def _fetch_once(self, key: str, fetch: Fetch, deadline: float) -> Link:
        try:
            lock = self.store.lock(key, self.lock_ttl)
            first_marker: str | None = None
            source = "cache"  # what a link found in the store counts as; after waiting for a holder, "shared"
            for attempt in itertools.count():
                acquired = lock.acquire()  # before reading, so a holder that just finished has its link stored
                record, marker = self.store.read_with_marker(key)
                if attempt == 0:
                    first_marker = marker  # an earlier attempt's failure: not the news a waiter waits for
                    held = _hold_in(marker)
                    if held is not None:  # Ayrshare rate-limited this link: no call until its hold ends
                        if acquired:
                            _release(lock)
                        return self._stale_or_raise(key, held)
                link = self._usable(record, self.min_remaining)
                # A new marker is a holder's news; the earlier one expiring (None) is not.
                if link is not None or (marker is not None and marker != first_marker):
                    if acquired:
                        _release(lock)
                    if link is not None:
                        return replace(link, source=source)
                    return self._stale_or_raise(key, _failure_in(marker))
                if acquired:
                    return self._fetch_as_holder(key, lock, fetch, deadline)
                if attempt == 0:
                    self.on_event("wait")
                if time.monotonic() + POLL_SECONDS >= deadline:
                    return self._stale_or_raise(key, UpstreamTimeout())
                source = "shared"
                time.sleep(POLL_SECONDS)
            raise AssertionError("unreachable")  # the loop returns or raises
        except StoreUnavailable:
            self.on_event("redis_error")
            return self._fetch(key, fetch, deadline, holder=False)

    def _fetch_as_holder(self, key: str, lock: FetchLock, fetch: Fetch, deadline: float) -> Link:
        try:
            return self._fetch(key, fetch, deadline, holder=True)
        finally:
            _release(lock)

    def _fetch(self, key: str, fetch: Fetch, deadline: float, holder: bool) -> Link:
        """Our own call to Ayrshare. The lock's holder stores a new link, or leaves a marker of its failure for the
        waiters; without the lock (Redis down) nothing is written."""
        try:
            link = replace(fetch(deadline), source="upstream" if holder else "direct")
        except _UPSTREAM_FAILURES as error:
            hold = getattr(error, "hold_seconds", None)  # a 429: the marker holds every caller off until it ends
            fields = {**error.public_fields(), "attempt": secrets.token_hex(8)}
            if hold:
                fields["hold_until"] = time.time() + hold
            if holder:
                self._quietly(self.store.write_marker, key, json.dumps(fields), hold or ERROR_MARKER_SECONDS)
            return self._stale_or_raise(key, error)
        ttl = link.remaining() - self.stale_min  # kept while it can still serve as a stale link
        if holder and ttl > 0:
            self._quietly(self.store.write, key, link, ttl)
        return link

    def _stale_or_raise(self, key: str, error: ServiceError) -> Link:
        """Stale-if-error: a link with at least `stale_min` seconds left beats an error; an expired one never."""
        stale = self._read(key, self.stale_min, quiet=True)
        if stale is None:
            raise error
        self.on_event("stale")
        return replace(stale, source="stale")

    # -- store access ------------------------------------------------------------------------------------------
    def _read(self, key: str, min_left: float, quiet: bool = False) -> Link | None:
        try:
            record = self.store.read(key)
        except StoreUnavailable:
            if not quiet:
                self.on_event("redis_error")
            return None
        return self._usable(record, min_left)

    def _usable(self, record: Record | None, min_left: float) -> Link | None:
        if record is None or record[1] - time.time() <= min_left:
            return None
        if not self.url_ok(record[0]):
            self.on_event("cache_rejected")
            return None
        return Link(url=record[0], expires_at=record[1], source="cache")

    def _quietly(self, func, *args) -> None:
        try:
            func(*args)
        except StoreUnavailable:
            self.on_event("redis_error")


def _release(lock: FetchLock) -> None:
    with contextlib.suppress(StoreUnavailable):  # the lock's TTL frees it
        lock.release()


def _failure_in(marker: str | None) -> ServiceError:
    """The holder's error as its waiters answer it (our own words only: no upstream text is ever in a marker)."""
    try:
        return ServiceError.from_public_fields(json.loads(marker or ""))
    except (ValueError, AttributeError):  # unreadable (e.g. an older format): a plain outage
        return UpstreamUnavailable()


def _hold_in(marker: str | None) -> ServiceError | None:
    """The error to answer while a rate-limit hold is on (Retry-After: what is left of it), else None."""
    if not marker:
        return None
    try:
        fields = json.loads(marker)
        left = float(fields["hold_until"]) - time.time()
    except (ValueError, KeyError, TypeError):
        return None
    if left <= 0:
        return None
    error = _failure_in(marker)
    error.retry_after = max(1, int(left + 0.999))
    return error


def _own_copy(error: BaseException) -> BaseException:
    """One exception object per request: followers re-raising the leader's object would mix their tracebacks."""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception type that cannot be copied is raised as it is
        return error
