"""Rate limits on `/connect` (Flask-Limiter): per client address, per user, and per user for upstream calls.

Three limits, each a setting in Flask-Limiter's notation ("120/minute", "10 per 5 minutes"):

- `RATE_LIMIT_PER_ADDRESS` (default 120/minute) counts every request from one client address, refused ones included:
  it bounds what one machine can make the service do (auth checks, Redis reads). The address is the socket peer, or
  the client named in `X-Forwarded-For` when `TRUSTED_PROXY_COUNT` proxies are in front (Werkzeug ProxyFix); without
  that setting the header is ignored, so it cannot be forged to dodge the limit.
- `RATE_LIMIT_PER_USER` (default 30/minute) counts requests for one user that got past authentication: cache hits
  are cheap, so this is generous, and because refused requests do not count, nobody can lock a user out by spamming
  their id. It is spent by the use case once the request is authenticated and valid (one `hit`, one Redis round
  trip); an earlier version tested before the view and counted after it: two extra round trips on every cache hit.
- `RATE_LIMIT_UPSTREAM_PER_USER` (default 10 per 5 minutes) counts only requests that are about to call Ayrshare:
  it is checked on a cache miss, inside the single-flight fetch (`UpstreamBudget`), so cache hits never pay for it
  and a user who spent it still gets cached links. Ayrshare
  limits each profile to a few hundred calls per 5 minutes (150-300 depending on the doc version) and suspends a
  profile after 1,000 429s in 24 h. With the cache, an ordinary user costs at most one call per link lifetime
  (5 minutes) and option set; 10 leaves room for a few option variants while capping what even a valid credential
  can spend at 10 of the smallest documented 150, so the service itself never earns Ayrshare 429s. (The HTTP
  client repeats a 429/5xx answer once and a dropped connection at most twice: still at most 30 calls, a fifth of
  the budget; and after a 429 the user's next calls wait for the window, so 429s are never hammered.)

Counters live in Redis (`REDIS_URL`, prefix `connect:ratelimit`) so every worker and instance shares them, or in
memory when `REDIS_URL` is unset. The limiter fails open: when its Redis is unreachable it falls back to per-process
in-memory counters (Flask-Limiter's `in_memory_fallback_enabled`) and swallows storage errors (`swallow_errors`),
re-checking Redis with exponential backoff, so a Redis outage never turns into 500s. A refused request gets 429 in
the service's error shape with `Retry-After`. `RATE_LIMIT_ENABLED=0` switches all of this off (startup warning).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from flask import Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import RateLimiter, SlidingWindowCounterRateLimiter

from .errors import RateLimited, render_error
from .settings import Settings

KEY_PREFIX = "connect:ratelimit"
CONNECT_ENDPOINT = "connect.connect"
DEFAULT_RETRY_AFTER = 60
STORAGE_RETRY_SECONDS = 1.0


def client_address() -> str:
    return "addr:" + (request.remote_addr or "unknown")


def is_preflight() -> bool:
    return request.method == "OPTIONS"


def storage_uri(settings: Settings) -> str:
    if not settings.redis_url:
        return "memory://"
    if settings.redis_url.startswith("unix://"):
        return "redis+" + settings.redis_url
    return settings.redis_url


def build_limiter(settings: Settings) -> Limiter | None:
    if not settings.rate_limit_enabled:
        return None
    options = {}
    if settings.redis_url:
        options = {"socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout}
    return Limiter(
        key_func=client_address,
        storage_uri=storage_uri(settings),
        storage_options=options,
        strategy="sliding-window-counter",
        key_prefix=KEY_PREFIX,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        headers_enabled=False,
    )


class Budget:
    """One limit spent at the moment it applies, with a single `hit` on the limiter's strategy (one Redis round trip).

    - `RATE_LIMIT_PER_ADDRESS`: spent before `/connect` does anything (`init_app`'s before_request hook).
    - `RATE_LIMIT_PER_USER`: spent once the request is authenticated and valid, so refusals never count against the
      user they name.
    - `RATE_LIMIT_UPSTREAM_PER_USER`: spent when a cache miss is about to call Ayrshare.

    Flask-Limiter's `@limit` decorators were measured at about 300 µs of their own Python per request, plus a test
    before the view and a hit after it for limits that count only some answers; this costs one round trip each.

    Uses the limiter's own storage strategy (Redis shared by every worker, or its in-memory fallback). Storage trouble
    lets the request through, like the per-address limit (`swallow_errors`).
    """

    def __init__(self, limiter: Limiter, limit: str, scope: str, message: str, code: str):
        self.limiter = limiter
        self.limits = parse_many(limit)
        self.scope, self.message, self.code = scope, message, code
        # While the shared storage is unreachable, counting carries on in this process (like Flask-Limiter's
        # in_memory_fallback), re-trying the shared storage after STORAGE_RETRY_SECONDS.
        self._fallback = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared_down_until = 0.0

    def __call__(self, identity_source: str) -> None:
        identity = hashlib.sha256(identity_source.encode("utf-8", "replace")).hexdigest()[:32]
        for item in self.limits:
            strategy, allowed = self._hit(item, identity)
            if allowed:
                continue
            try:
                reset_at = strategy.get_window_stats(item, KEY_PREFIX, self.scope, identity).reset_time
            except Exception:  # noqa: BLE001 - a hint only; the refusal stands
                reset_at = time.time() + DEFAULT_RETRY_AFTER
            raise RateLimited(self.message, code=self.code, retry_after=max(1, math.ceil(reset_at - time.time())))

    def _hit(self, item, identity: str) -> tuple[RateLimiter, bool]:
        if time.monotonic() >= self._shared_down_until:
            try:
                strategy = self.limiter.limiter
                return strategy, strategy.hit(item, KEY_PREFIX, self.scope, identity)
            except Exception:  # noqa: BLE001 - storage trouble never becomes a 500
                self._shared_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
        return self._fallback, self._fallback.hit(item, KEY_PREFIX, self.scope, identity)


def user_budgets(limiter: Limiter | None, settings: Settings) -> tuple[Budget | None, Budget | None]:
    """(requests per user, upstream calls per user), or (None, None) when rate limiting is off."""
    if limiter is None:
        return None, None
    requests = Budget(
        limiter, settings.rate_limit_per_user, "user", "Too many requests for this user. Wait a moment.", "rate_limited"
    )
    upstream = Budget(
        limiter,
        settings.rate_limit_upstream_per_user,
        "upstream",
        "This user has asked Ayrshare for new links too often. Wait a few minutes and try again.",
        "upstream_budget_spent",
    )
    return requests, upstream


def init_app(app: Flask, limiter: Limiter | None, settings: Settings) -> None:
    """Spend the per-address limit before every /connect request; per-user limits are spent by the use case itself
    (`Budget`)."""
    if limiter is None:
        return
    limiter.init_app(app)
    _route_limiter_logs()
    per_address = Budget(limiter, settings.rate_limit_per_address, "addr", RateLimited.message, "rate_limited")

    @app.before_request
    def _spend_address_budget() -> None:
        if request.endpoint == CONNECT_ENDPOINT and not is_preflight():
            per_address(request.remote_addr or "unknown")

    @app.errorhandler(RateLimitExceeded)
    def _too_many_requests(exc: RateLimitExceeded) -> Response:
        g.rate_limited = True
        return render_error(RateLimited(retry_after=_retry_after(limiter)))

    app.extensions["rate_limiter"] = limiter


def _retry_after(limiter: Limiter) -> int:
    try:
        breached = limiter.current_limit
        if breached is not None:
            return max(1, math.ceil(breached.reset_at - time.time()))
    except Exception:  # noqa: BLE001, S110 - storage trouble while computing a hint must not turn a 429 into a 500
        pass
    return DEFAULT_RETRY_AFTER


def _route_limiter_logs() -> None:
    """Flask-Limiter's own log lines go through the service's JSON handler and redactor."""
    service_logger = logging.getLogger("service")
    limiter_logger = logging.getLogger("flask-limiter")
    limiter_logger.handlers = list(service_logger.handlers)
    limiter_logger.setLevel(logging.WARNING)
    limiter_logger.propagate = False
