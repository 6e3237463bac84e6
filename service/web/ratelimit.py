"""Rate limits on `/connect`, counted with the `limits` library's sliding-window counter.

`RATE_LIMIT_PER_ADDRESS` and `RATE_LIMIT_PER_USER` are flood guards counted in each worker's memory, at no Redis cost.
`RATE_LIMIT_UPSTREAM_PER_USER`, spent only by a cache miss about to call Ayrshare, protects the Ayrshare quota: it is
counted in Redis, shared by every worker and instance, and in process memory while Redis is unreachable.
"""

from __future__ import annotations

import hashlib
import math
import time

from flask import Flask, request
from limits import parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from ..config import Settings
from ..errors import RateLimited

KEY_PREFIX = "connect:ratelimit"
CONNECT_ENDPOINT = "connect.connect"
STORAGE_RETRY_SECONDS = 1.0


class Budget:
    """One limit (`"30/minute"`, `"10 per 5 minutes"`, several separated by `;`), spent by calling it with an identity.

    `storage`: where the counts live (default: this process's memory). Storage trouble never refuses a request:
    counting carries on in this process's memory and the storage is tried again after `STORAGE_RETRY_SECONDS`.
    """

    def __init__(self, limit: str, scope: str, message: str, code: str, storage: Storage | None = None):
        self.limits = parse_many(limit)
        self.scope, self.message, self.code = scope, message, code
        self._fallback = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._counter = SlidingWindowCounterRateLimiter(storage) if storage is not None else self._fallback
        self._shared_down_until = 0.0

    def __call__(self, identity_source: str) -> None:
        """Spend one request for `identity_source`, or raise `RateLimited` with the seconds until one is free."""
        # Counter keys never hold a user id or address in clear.
        identity = hashlib.sha256(identity_source.encode("utf-8", "replace")).hexdigest()[:32]
        for item in self.limits:
            if not self._on_storage("hit", item, KEY_PREFIX, self.scope, identity):
                stats = self._on_storage("get_window_stats", item, KEY_PREFIX, self.scope, identity)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(self.message, code=self.code, retry_after=retry_after)

    def _on_storage(self, method: str, *args):
        if self._counter is not self._fallback and time.monotonic() >= self._shared_down_until:
            try:
                return getattr(self._counter, method)(*args)
            except Exception:  # noqa: BLE001 - storage trouble never becomes a 500
                self._shared_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
        return getattr(self._fallback, method)(*args)


def shared_storage(settings: Settings) -> Storage | None:
    """The Redis storage for limits shared across workers and instances (None without REDIS_URL)."""
    if not settings.redis_url:
        return None
    uri = "redis+" + settings.redis_url if settings.redis_url.startswith("unix://") else settings.redis_url
    return storage_from_string(
        uri, socket_timeout=settings.redis_timeout, socket_connect_timeout=settings.redis_timeout
    )


def user_budgets(settings: Settings) -> tuple[Budget | None, Budget | None]:
    """(requests per user, upstream calls per user), or (None, None) when rate limiting is off."""
    if not settings.rate_limit_enabled:
        return None, None
    requests = Budget(
        settings.rate_limit_per_user, "user", "Too many requests for this user. Wait a moment.", "rate_limited"
    )
    upstream = Budget(
        settings.rate_limit_upstream_per_user,
        "upstream",
        "This user has asked Ayrshare for new links too often. Wait a few minutes and try again.",
        "upstream_budget_spent",
        storage=shared_storage(settings),
    )
    return requests, upstream


def init_app(app: Flask, settings: Settings) -> None:
    """Spend the per-address limit before every /connect request (refused ones included)."""
    if not settings.rate_limit_enabled:
        return
    per_address = Budget(settings.rate_limit_per_address, "addr", RateLimited.message, "rate_limited")

    @app.before_request
    def _spend_address_budget() -> None:
        if request.endpoint == CONNECT_ENDPOINT and request.method != "OPTIONS":
            per_address(request.remote_addr or "unknown")
