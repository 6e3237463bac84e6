"""Rate limits on `/connect`: per client address, per user, and per user for upstream calls.

Three limits, each a setting in the `limits` notation Flask-Limiter uses ("120/minute", "10 per 5 minutes"):

- `RATE_LIMIT_PER_ADDRESS` (default 120/minute) counts every request from one client address, refused ones included:
  it bounds what one machine can make the service do (auth checks, Redis reads). The address is the socket peer, or
  the client named in `X-Forwarded-For` when `TRUSTED_PROXY_COUNT` proxies are in front (Werkzeug ProxyFix); without
  that setting the header is ignored, so it cannot be forged to dodge the limit.
- `RATE_LIMIT_PER_USER` (default 30/minute) counts requests for one user that got past authentication: cache hits
  are cheap, so this is generous, and because refused requests do not count, nobody can lock a user out by spamming
  their id. It is spent once the request is authenticated and valid: by the broker on a hit or while waiting for
  another request's fetch, and first of all by whoever resolves a miss (the fetcher, under gunicorn).
- `RATE_LIMIT_UPSTREAM_PER_USER` (default 10 per 5 minutes) counts only requests that are about to call Ayrshare:
  it is checked on a cache miss, inside the single-flight fetch (`UpstreamBudget`), so cache hits never pay for it
  and a user who spent it still gets cached links. Ayrshare
  limits each profile to a few hundred calls per 5 minutes (150-300 depending on the doc version) and suspends a
  profile after 1,000 429s in 24 h. With the cache, an ordinary user costs at most one call per link lifetime
  (5 minutes) and option set; 10 leaves room for a few option variants while capping what even a valid credential
  can spend at 10 of the smallest documented 150, so the service itself never earns Ayrshare 429s. (The HTTP
  client repeats a 429/5xx answer once and a dropped connection at most twice: still at most 30 calls, a fifth of
  the budget; and after a 429 the user's next calls wait for the window, so 429s are never hammered.)

Counting is the `limits` library's sliding-window-counter strategy (the library under Flask-Limiter, with the same
storage URLs and Redis keys). Flask-Limiter itself was dropped: every limit here is spent where it applies, so its
per-request hooks enforced nothing and cost 14 % of a cache hit. Each limit is spent through `TokenLeases`
(service/token_leases.py): small limits (every default) one exact hit per request, hot keys under large limits in
leased batches, never admitting more than the limit.

Counters live in Redis (`REDIS_URL`, prefix `connect:ratelimit`) so every worker and instance shares them, or in
memory when `REDIS_URL` is unset. The limits fail open: when their Redis is unreachable, counting carries on in
per-process memory and Redis is tried again after `STORAGE_RETRY_SECONDS`, so a Redis outage never turns into 500s.
A refused request gets 429 in the service's error shape with `Retry-After`. `RATE_LIMIT_ENABLED=0` switches all of
this off (startup warning).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time

from flask import Flask, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import RateLimiter, SlidingWindowCounterRateLimiter

from .errors import RateLimited
from .link_store import LEAN_CONNECTIONS
from .settings import Settings
from .token_leases import TokenLeases

KEY_PREFIX = "connect:ratelimit"
CONNECT_ENDPOINT = "connect.connect"
DEFAULT_RETRY_AFTER = 60
STORAGE_RETRY_SECONDS = 1.0


def storage_uri(settings: Settings) -> str:
    if not settings.redis_url:
        return "memory://"
    if settings.redis_url.startswith("unix://"):
        return "redis+" + settings.redis_url
    return settings.redis_url


def build_counter(settings: Settings) -> RateLimiter | None:
    """The shared counting strategy every limit spends from, or None when rate limiting is off."""
    if not settings.rate_limit_enabled:
        return None
    options = {}
    if settings.redis_url:
        options = {
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
            **LEAN_CONNECTIONS,
        }
    return SlidingWindowCounterRateLimiter(storage_from_string(storage_uri(settings), **options))


class Budget:
    """One limit spent at the moment it applies, through `TokenLeases` (service/token_leases.py) over the shared
    counter: an exact `hit` per request for small limits, batches of tokens for hot keys under large ones.

    - `RATE_LIMIT_PER_ADDRESS`: spent before `/connect` does anything (`init_app`'s before_request hook).
    - `RATE_LIMIT_PER_USER`: spent once the request is authenticated and valid, so refusals never count against the
      user they name, and before anything else of a miss, so a refused request never reaches Ayrshare.
    - `RATE_LIMIT_UPSTREAM_PER_USER`: spent when a cache miss is about to call Ayrshare.

    Storage trouble lets the request through: counting carries on in this process until the shared storage answers.
    """

    def __init__(self, counter: RateLimiter, limit: str, scope: str, message: str, code: str):
        self.counter = counter
        self.limits = parse_many(limit)
        self.scope, self.message, self.code = scope, message, code
        self._fallback = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared_down_until = 0.0
        self._leases = TokenLeases(self._take, self._wait_hint)

    def __call__(self, identity_source: str) -> None:
        identity = _hashed_identity(identity_source)
        for item in self.limits:
            retry_after = self._leases.admit(item, identity)
            if retry_after is not None:
                raise RateLimited(self.message, code=self.code, retry_after=retry_after)

    def _take(self, item: RateLimitItem, identity: str, cost: int) -> bool:
        return self._on_storage("hit", item, KEY_PREFIX, self.scope, identity, cost=cost)

    def _wait_hint(self, item: RateLimitItem, identity: str) -> int:
        try:
            reset_at = self._on_storage("get_window_stats", item, KEY_PREFIX, self.scope, identity).reset_time
        except Exception:  # noqa: BLE001 - a hint only; the refusal stands
            reset_at = time.time() + DEFAULT_RETRY_AFTER
        return max(1, math.ceil(reset_at - time.time()))

    def _on_storage(self, method: str, *args, **kwargs):
        """Call the shared counter, or this process's fallback while the shared storage is unreachable."""
        if time.monotonic() >= self._shared_down_until:
            try:
                return getattr(self.counter, method)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - storage trouble never becomes a 500
                self._shared_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
        return getattr(self._fallback, method)(*args, **kwargs)


@functools.lru_cache(maxsize=4096)  # the same addresses and users come back; no need to hash them on every request
def _hashed_identity(identity_source: str) -> str:
    """Counter keys never hold a user id or address in clear."""
    return hashlib.sha256(identity_source.encode("utf-8", "replace")).hexdigest()[:32]


def user_budgets(counter: RateLimiter | None, settings: Settings) -> tuple[Budget | None, Budget | None]:
    """(requests per user, upstream calls per user), or (None, None) when rate limiting is off."""
    if counter is None:
        return None, None
    requests = Budget(
        counter, settings.rate_limit_per_user, "user", "Too many requests for this user. Wait a moment.", "rate_limited"
    )
    upstream = Budget(
        counter,
        settings.rate_limit_upstream_per_user,
        "upstream",
        "This user has asked Ayrshare for new links too often. Wait a few minutes and try again.",
        "upstream_budget_spent",
    )
    return requests, upstream


def init_app(app: Flask, counter: RateLimiter | None, settings: Settings) -> None:
    """Spend the per-address limit before every /connect request; per-user limits are spent by the use case itself
    (`Budget`)."""
    if counter is None:
        return
    per_address = Budget(counter, settings.rate_limit_per_address, "addr", RateLimited.message, "rate_limited")

    @app.before_request
    def _spend_address_budget() -> None:
        req = request._get_current_object()  # one context lookup instead of three
        if req.endpoint == CONNECT_ENDPOINT and req.method != "OPTIONS":
            per_address(req.remote_addr or "unknown")

    app.extensions["rate_limit_counter"] = counter
