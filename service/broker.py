"""Getting a link: the cache's freshness rule, single-flight fetching and stale-if-error (`LinkBroker`).

`LinkBroker.get_link(key, fetch)` answers from the store while a link has more than `LINK_MIN_REMAINING_SECONDS`
left, and otherwise makes sure only one caller fetches a new one:

1. In this process, concurrent requests for the same key share one in-flight fetch (a `_Flight`), so a burst costs
   one Redis lock attempt and one poller per process rather than one per request.
2. Across processes and instances, the process leader takes a Redis lock (`SET NX PX`, owner token, released by
   compare-and-delete). Other leaders poll the store until the link appears, the holder records a failure, or the
   lock vanishes (holder died: they take over; the lock's TTL bounds how long a crashed holder blocks anyone).
3. The store unavailable at any step: fetch directly. Redis never takes `/connect` down.

A process leader runs `resolve_miss` (steps 2-3) itself, or hands it to `miss_resolver` when one is set: under
gunicorn, the worker's fetcher process (service/fetcher.py), which runs the same method on its own copy of the broker.
Each request's own limit (`admit`) is spent on a hit, or before waiting for a flight; a leader's is spent by whoever
resolves its miss, before anything else. A leader refused by it gets its refusal alone (`LeaderRefused`): its waiters
were admitted on their own, and one of them leads instead.

One deadline per request (`REQUEST_DEADLINE_SECONDS`) covers waiting for another caller and our own upstream call
(which gets whatever is left, at most `AYRSHARE_DEADLINE_SECONDS`). A holder that fails leaves a one-second marker
with its exact public error and its lock token, so waiters answer the same thing instead of repeating the call; a
marker whose holder is no longer the lock's holder belongs to an earlier attempt, and waiters wait for the current one.

Each worker keeps a bounded copy of the links it has read from or written to the store, so a cache hit usually costs
no Redis round trip at all (measured in BENCHMARKS.md); the copy obeys the same freshness rule.

Freshness comes from the token's verified `exp`, not from what we asked for. Entries live in the store until
`LINK_STALE_MIN_SECONDS` before expiry so that, when Ayrshare fails, a link with at least that much left can still be
served (stale-if-error); an expired link is never served.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from .errors import ServiceError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from .link_store import FlightState, StoreUnavailable
from .links import Link

# Waiters in other processes learn of a holder's link at most this late (25 ms used to add up to 25 ms to the p99 of
# a cold burst: BENCHMARKS.md, scenario 2). One waiter per process and key polls, so this is ~200 small reads a second
# per waiting process while an upstream call lasts.
POLL_SECONDS = 0.005
ERROR_MARKER_SECONDS = 1.0
LOCAL_COPIES_MAX = 4096  # links (~1 KB each) a worker keeps beside the store
# Ayrshare failing (rather than our caller being refused): these are shared with waiters and allow stale-if-error.
_UPSTREAM_FAILURES = (UpstreamRefused, UpstreamUnavailable, UpstreamTimeout)


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.link: Link | None = None
        self.error: BaseException | None = None
        self.leader_refused = False  # the leader was over its own limit: no answer, the waiters go on without it


class LinkStore(Protocol):
    """What the broker needs from a store (`RedisLinkStore`, `MemoryLinkStore`); any method may raise
    `StoreUnavailable`."""

    def read(self, key: str) -> tuple[str, float] | None: ...
    def write(self, key: str, url: str, expires_at: float, ttl_seconds: float, release: str = "") -> bool: ...
    def claim(self, key: str, ttl_seconds: float) -> tuple[str | None, tuple[str, float] | None]: ...
    def peek(self, key: str) -> FlightState: ...
    def unlock(self, key: str, token: str) -> None: ...
    def write_error(self, key: str, marker: str, ttl_seconds: float) -> None: ...


Fetch = Callable[[float], Link]  # called with the monotonic deadline the upstream call must finish by
Admit = Callable[[], None]  # spends the request's own limit, or raises the ServiceError that refuses it


def _admit_all() -> None:
    """No limit to spend."""


class ResolverGone(Exception):
    """The process a broker hands its misses to is gone: the miss is resolved here instead."""


class LeaderRefused(Exception):
    """A flight's leader was refused by its own request limit (`error`). That verdict is the leader's alone: its
    waiters were each admitted on their own, so the flight ends without an answer and one of them leads instead."""

    def __init__(self, error: ServiceError):
        super().__init__(error.code)
        self.error = error


@dataclass
class LinkBroker:
    store: LinkStore
    min_remaining: float
    stale_min: float
    lock_ttl: float  # upstream deadline plus a little: how long a crashed holder can block others
    request_seconds: float = 30.0  # bound on a whole request: waiting for another caller's fetch plus our own
    on_event: Callable[[str], None] = lambda event: None  # metrics hook: "redis_error", "wait", "stale"
    # Called as `resolve_miss` is, in another process (service/fetcher.py), which admits the request first when the
    # last argument is True; raises ResolverGone when it cannot be, LeaderRefused when the request is not admitted.
    miss_resolver: Callable[[str, Fetch, float, bool], tuple[Link, bool]] | None = None
    _flights: dict[str, _Flight] = field(default_factory=dict)
    _flights_lock: threading.Lock = field(default_factory=threading.Lock)
    _copies: dict[str, Link] = field(default_factory=dict)  # this worker's copies of links held in the store

    def get_link(self, key: str, fetch: Fetch, admit: Admit = _admit_all) -> Link:
        """The link for `key`, once `admit` has let the request through (the user's request limit).

        Where `admit` runs is part of the speed of a cold burst: a hit and a waiter spend their limit here, but a
        flight's leader has it spent by whoever resolves the miss, first of all: in the fetcher, that is one Redis round
        trip less in the worker before the one call to Ayrshare leaves (BENCHMARKS.md, scenario 2). Either way a
        request refused by its limit never reaches Ayrshare.
        """
        copy_here = self._fresh_copy(key, self.min_remaining)
        if copy_here is not None:
            admit()
            return copy_here
        deadline = time.monotonic() + self.request_seconds
        # Everything past this worker's copy goes through the flight, store read included: on a burst for a new link
        # one thread per process talks to Redis and the rest wait on an Event, instead of a hundred reads competing
        # with the one request that has to reach Ayrshare.
        return self._share_flight(key, fetch, deadline, admit)

    def resolve_miss(self, key: str, fetch: Fetch, deadline: float) -> tuple[Link, bool]:
        """What a process leader does about a miss: the link, and whether the store holds it (so the worker that
        asked may keep a copy, as this process just did)."""
        link = self._fetch_once(key, fetch, deadline)
        return link, self._copies.get(key) == replace(link, source="cache")

    def _lead(self, key: str, fetch: Fetch, deadline: float, admit: Admit | None) -> Link:
        """Resolve the flight's miss; `admit` is the leader's own limit, None once spent."""
        if self.miss_resolver is not None:
            try:
                link, held = self.miss_resolver(key, fetch, deadline, admit is not None)
            except ResolverGone:
                pass  # resolved here instead (a fetcher lost after admitting the request counts it twice: never more)
            else:
                if held:
                    self._copy_here(key, replace(link, source="cache"))
                return link
        if admit is not None:
            try:
                admit()
            except ServiceError as error:
                raise LeaderRefused(error) from None
        return self.resolve_miss(key, fetch, deadline)[0]

    # -- in-process coalescing -----------------------------------------------------------------------------------
    def _share_flight(self, key: str, fetch: Fetch, deadline: float, admit: Admit) -> Link:
        admitted = False
        while True:
            with self._flights_lock:
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
            if leader:
                return self._run_flight(flight, key, fetch, deadline, None if admitted else admit)
            if not admitted:
                admit()  # a refusal here is this request's alone: the flight goes on without it
                admitted = True
            self.on_event("wait")
            if not flight.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                return self._stale_or_raise(key, UpstreamTimeout())
            if flight.leader_refused:
                continue  # one of the admitted waiters leads now
            if flight.error is not None:
                raise _own_copy(flight.error)
            # The leader's fetch was for everyone; for the others it is a shared answer, not their own upstream call.
            return replace(flight.link, source="shared") if not flight.link.cached else flight.link

    def _run_flight(self, flight: _Flight, key: str, fetch: Fetch, deadline: float, admit: Admit | None) -> Link:
        try:
            flight.link = self._lead(key, fetch, deadline, admit)
            return flight.link
        except LeaderRefused as refused:
            flight.leader_refused = True
            raise refused.error from None
        except BaseException as error:
            flight.error = error
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
            flight.done.set()

    # -- cross-process single-flight -------------------------------------------------------------------------
    def _fetch_once(self, key: str, fetch: Fetch, deadline: float) -> Link:
        source = "cache"  # a link the store already holds; after waiting for another holder it is "shared"
        try:
            while time.monotonic() < deadline:
                # The lock is claimed even when the store may hold the link: reading and claiming in one round trip
                # keeps a new link's leader at one Redis trip before Ayrshare; a claim we turn out not to need is
                # released at once (once per link and worker).
                token, record = self.store.claim(key, self.lock_ttl)
                link = self._usable(key, record, self.min_remaining)
                if link is not None:
                    link = replace(link, source=source)
                if token is not None:
                    return self._fetch_as_holder(key, token, fetch, deadline, link)
                if link is not None:
                    return link
                link = self._wait_for_holder(key, deadline)
                if link is not None:
                    return link
                source = "shared"
            return self._stale_or_raise(key, UpstreamTimeout())
        except StoreUnavailable:
            self.on_event("redis_error")
            return self._fetch_and_fallback(key, fetch, deadline, source="direct")

    def _fetch_as_holder(self, key: str, token: str, fetch: Fetch, deadline: float, found: Link | None) -> Link:
        if found is not None:
            self._release(key, token)
            return found
        return self._fetch_and_fallback(key, fetch, deadline, source="upstream", holder=token)

    def _fetch_and_fallback(self, key: str, fetch: Fetch, deadline: float, source: str, holder: str = "") -> Link:
        """Our own call to Ayrshare. The lock `holder` (if any) is given up here: with a new link, in the round trip
        that stores it; otherwise once the error marker waiters read is written."""
        released = False
        try:
            try:
                link = replace(fetch(deadline), source=source)
            except _UPSTREAM_FAILURES as error:
                self._quietly(self.store.write_error, key, _marker(error, holder), ERROR_MARKER_SECONDS)
                return self._stale_or_raise(key, error)
            released = self._remember(key, link, release=holder)
            return link
        finally:
            if holder and not released:
                self._release(key, holder)

    def _release(self, key: str, token: str) -> None:
        with contextlib.suppress(StoreUnavailable):  # if Redis is gone, the lock's TTL releases it
            self.store.unlock(key, token)

    def _wait_for_holder(self, key: str, deadline: float) -> Link | None:
        """Poll until the holder's link appears (→ link), it failed (→ its error), or the lock is gone (→ None)."""
        self.on_event("wait")
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            state = self.store.peek(key)
            link = self._usable(key, state.record, self.min_remaining)
            if link is not None:
                return replace(link, source="shared")
            failure = _failure_of_last_holder(state)
            if failure is not None:
                return self._stale_or_raise(key, failure)
            if state.lock_holder is None:
                return None
        return None

    def _stale_or_raise(self, key: str, error: ServiceError) -> Link:
        """Stale-if-error: a link with at least `stale_min` seconds left beats an error; an expired one never."""
        stale = self._read(key, self.stale_min, quiet=True)
        if stale is None:
            raise error
        self.on_event("stale")
        return replace(stale, source="stale")

    # -- store access ----------------------------------------------------------------------------------------
    def _read(self, key: str, min_left: float, quiet: bool = False) -> Link | None:
        """A link with more than `min_left` seconds left: this worker's copy, else the store's (then copied)."""
        copy_here = self._fresh_copy(key, min_left)
        if copy_here is not None:
            return copy_here
        try:
            record = self.store.read(key)
        except StoreUnavailable:
            if not quiet:
                self.on_event("redis_error")
            return None
        return self._usable(key, record, min_left)

    def _fresh_copy(self, key: str, min_left: float) -> Link | None:
        copy_here = self._copies.get(key)
        if copy_here is not None and copy_here.expires_at - time.time() > min_left:
            return copy_here
        return None

    def _usable(self, key: str, record: tuple[str, float] | None, min_left: float) -> Link | None:
        """The store's record as a link (copied to this worker) if it has more than `min_left` seconds left."""
        if record is None:
            return None
        url, expires_at = record
        if expires_at - time.time() <= min_left:
            return None
        link = Link(url=url, expires_at=expires_at, source="cache")
        self._copy_here(key, link)
        return link

    def _remember(self, key: str, link: Link, release: str = "") -> bool:
        """Store a new link (and copy it here). With `release`, the same round trip frees that lock token's lock: True
        when it did."""
        ttl = link.remaining() - self.stale_min
        if ttl <= 0:
            return False
        try:
            released = self.store.write(key, link.url, link.expires_at, ttl, release)
        except StoreUnavailable:
            self.on_event("redis_error")
            return False
        # Only links the store holds are copied: while the store is down, requests go to Ayrshare as documented.
        self._copy_here(key, replace(link, source="cache"))
        return released

    def _copy_here(self, key: str, link: Link) -> None:
        # A link's validity is its own exp, so a copy is exactly as fresh as the store's entry; it saves the hit path
        # its Redis round trip. Bounded: past the limit the copies are simply dropped and re-read from the store.
        if len(self._copies) >= LOCAL_COPIES_MAX:
            self._copies.clear()
        self._copies[key] = link

    def _quietly(self, func, *args) -> bool:
        try:
            func(*args)
        except StoreUnavailable:
            self.on_event("redis_error")
            return False
        return True


def _marker(error: ServiceError, holder: str) -> str:
    """What waiters need to give their callers the holder's exact answer (our own words: no upstream text)."""
    return json.dumps({**error.public_fields(), "holder": holder})


def _failure_of_last_holder(state: FlightState) -> ServiceError | None:
    """The error a waiter should answer with, if the store holds one from the attempt it was waiting for.

    A marker left by an earlier holder while a new one holds the lock is old news: that attempt is still running.
    """
    if state.error_marker is None:
        return None
    try:
        fields = json.loads(state.error_marker)
        if state.lock_holder is not None and fields.get("holder") != state.lock_holder:
            return None
        return ServiceError.from_public_fields(fields)
    except (ValueError, AttributeError):  # unreadable (e.g. an older format): a plain outage
        return UpstreamUnavailable()


def _own_copy(error: BaseException) -> BaseException:
    """One exception object per request: followers re-raising the leader's object would mix their tracebacks."""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception type that cannot be copied is raised as it is
        return error
