"""Linking URLs: the `Link` value, cache keys, the freshness rule, and single-flight fetching.

`LinkBroker.get_link(profile_key, options, fetch)` answers from the store while a link has more than
`LINK_MIN_REMAINING_SECONDS` left, and otherwise makes sure only one caller fetches a new one:

1. In this process, concurrent requests for the same key share one in-flight fetch (a `_Flight`), so a burst costs
   one Redis lock attempt and one poller per process rather than one per request.
2. Across processes and instances, the process leader takes a Redis lock (`SET NX PX`, owner token, released by
   compare-and-delete). Other leaders poll the store until the link appears, the holder records a failure, or the
   lock vanishes (holder died: they take over; the lock's TTL bounds how long a crashed holder blocks anyone).
3. The store unavailable at any step: fetch directly. Redis never takes `/connect` down.

Freshness comes from the token's verified `exp`, not from what we asked for. Entries live in the store until
`LINK_STALE_MIN_SECONDS` before expiry so that, when Ayrshare fails, a link with at least that much left can still be
served (stale-if-error); an expired link is never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .errors import ServiceError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from .link_store import StoreUnavailable

KEY_PREFIX = "connect:link:v1:"
POLL_SECONDS = 0.025
ERROR_MARKER_SECONDS = 1.0
# Failures a waiter may inherit from the holder; anything else makes the waiter try for itself.
_SHAREABLE_ERRORS = {cls.__name__: cls for cls in (UpstreamRefused, UpstreamUnavailable, UpstreamTimeout)}


@dataclass(frozen=True)
class LinkOptions:
    """Everything besides the profile that changes the URL Ayrshare returns."""

    allowed_social: tuple[str, ...] = ()
    redirect: str | None = None
    expires_in: int | None = None  # minutes, 1-2880

    def as_request_fields(self) -> dict:
        fields: dict = {}
        if self.allowed_social:
            fields["allowedSocial"] = list(self.allowed_social)
        if self.redirect:
            fields["redirect"] = self.redirect
        if self.expires_in is not None:
            fields["expiresIn"] = self.expires_in
        return fields

    def fingerprint(self) -> str:
        return json.dumps(
            [sorted(self.allowed_social), self.redirect, self.expires_in],
            separators=(",", ":"),
            sort_keys=True,
        )


@dataclass(frozen=True)
class Link:
    url: str = field(repr=False)  # carries the API key inside its JWT: never log it
    expires_at: float  # Unix seconds, from the verified token
    source: str = "upstream"  # upstream | cache | shared | stale | direct

    @property
    def cached(self) -> bool:
        return self.source not in ("upstream", "direct")

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def cache_key(credential_fingerprint: str, domain: str, profile_key: str, options: LinkOptions) -> str:
    """Covers everything that changes the URL; hashed so no profile key or secret appears in Redis in clear."""
    material = "\0".join([credential_fingerprint, domain, profile_key, options.fingerprint()])
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.link: Link | None = None
        self.error: BaseException | None = None


@dataclass
class LinkBroker:
    store: object  # RedisLinkStore | MemoryLinkStore
    min_remaining: float
    stale_min: float
    lock_ttl: float  # upstream deadline plus a little: how long a crashed holder can block others
    on_event: Callable[[str], None] = lambda event: None  # metrics hook: "redis_error", "wait", ...
    _flights: dict[str, _Flight] = field(default_factory=dict)
    _flights_lock: threading.Lock = field(default_factory=threading.Lock)

    def get_link(self, key: str, fetch: Callable[[], Link]) -> Link:
        link = self._read(key, self.min_remaining)
        if link is not None:
            return replace(link, source="cache")
        return self._share_flight(key, lambda: self._fetch_once(key, fetch))

    # -- in-process coalescing -----------------------------------------------------------------------------------
    def _share_flight(self, key: str, run: Callable[[], Link]) -> Link:
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            self.on_event("wait")
            if not flight.done.wait(timeout=2 * self.lock_ttl + 1):
                raise UpstreamTimeout()
            if flight.error is not None:
                raise flight.error
            # The leader's fetch was for everyone; for the others it is a shared answer, not their own upstream call.
            return replace(flight.link, source="shared") if not flight.link.cached else flight.link
        try:
            flight.link = run()
            return flight.link
        except BaseException as error:
            flight.error = error
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
            flight.done.set()

    # -- cross-process single-flight -------------------------------------------------------------------------
    def _fetch_once(self, key: str, fetch: Callable[[], Link]) -> Link:
        give_up_at = time.monotonic() + 2 * self.lock_ttl
        try:
            while time.monotonic() < give_up_at:
                token = self.store.try_lock(key, self.lock_ttl)
                if token is not None:
                    return self._fetch_as_holder(key, token, fetch)
                link = self._wait_for_holder(key, give_up_at)
                if link is not None:
                    return link
            raise UpstreamTimeout()
        except StoreUnavailable:
            self.on_event("redis_error")
            return self._fetch_and_fallback(key, fetch, source="direct")

    def _fetch_as_holder(self, key: str, token: str, fetch: Callable[[], Link]) -> Link:
        try:
            # Another process may have finished between our read and our lock.
            link = self._read(key, self.min_remaining)
            if link is not None:
                return replace(link, source="shared")
            return self._fetch_and_fallback(key, fetch, source="upstream")
        finally:
            with contextlib.suppress(StoreUnavailable):  # if Redis is gone, the lock's TTL releases it
                self.store.unlock(key, token)

    def _fetch_and_fallback(self, key: str, fetch: Callable[[], Link], source: str) -> Link:
        try:
            link = replace(fetch(), source=source)
        except ServiceError as error:
            stale = self._read(key, self.stale_min, quiet=True)
            if stale is not None and isinstance(error, tuple(_SHAREABLE_ERRORS.values())):
                self.on_event("stale")
                return replace(stale, source="stale")
            if type(error).__name__ in _SHAREABLE_ERRORS:
                self._quietly(self.store.write_error, key, type(error).__name__, ERROR_MARKER_SECONDS)
            raise
        self._remember(key, link)
        return link

    def _wait_for_holder(self, key: str, give_up_at: float) -> Link | None:
        """Poll until the holder's link appears (→ link), it failed (→ its error), or the lock is gone (→ None)."""
        self.on_event("wait")
        while time.monotonic() < give_up_at:
            time.sleep(POLL_SECONDS)
            link = self._read(key, self.min_remaining)
            if link is not None:
                return replace(link, source="shared")
            failure = self.store.read_error(key)
            if failure in _SHAREABLE_ERRORS:
                stale = self._read(key, self.stale_min, quiet=True)
                if stale is not None:
                    return replace(stale, source="stale")
                raise _SHAREABLE_ERRORS[failure]()
            if not self.store.is_locked(key):
                return None
        return None

    # -- store access ----------------------------------------------------------------------------------------
    def _read(self, key: str, min_left: float, quiet: bool = False) -> Link | None:
        try:
            record = self.store.read(key)
        except StoreUnavailable:
            if not quiet:
                self.on_event("redis_error")
            return None
        if record is None:
            return None
        url, expires_at = record
        if expires_at - time.time() <= min_left:
            return None
        return Link(url=url, expires_at=expires_at, source="cache")

    def _remember(self, key: str, link: Link) -> None:
        ttl = link.remaining() - self.stale_min
        if ttl > 0:
            self._quietly(self.store.write, key, link.url, link.expires_at, ttl)

    def _quietly(self, func, *args) -> None:
        try:
            func(*args)
        except StoreUnavailable:
            self.on_event("redis_error")
