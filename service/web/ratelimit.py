"""Rate limits on `/connect`, in the `limits` notation ("30/minute"), counted as sliding-window counters.

`RATE_LIMIT_PER_ADDRESS` and `RATE_LIMIT_PER_USER` are flood guards counted in each worker's memory, at no Redis cost.
`RATE_LIMIT_UPSTREAM_PER_USER` and `RATE_LIMIT_UPSTREAM_GLOBAL`, spent only by a cache miss about to call Ayrshare,
protect the Ayrshare quota: they are counted in Redis by the `limits` library, shared by every worker and instance, and
in memory while Redis is down. IPv6 clients are counted by their /64, which one host usually holds whole.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
import time
from collections.abc import Callable

from flask import Flask, request
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import ReadOnlyError

from ..config import Settings
from ..config.connections import NODE_SCHEMES, redis_scheme
from ..errors import RateLimited, UpstreamUnavailable

KEY_PREFIX = "connect:ratelimit"
CONNECT_ENDPOINTS = ("connect.connect", "connect.accounts")
STORAGE_RETRY_SECONDS = 1.0


class LocalCounter:
    """The sliding-window counter of `limits`' `SlidingWindowCounterRateLimiter`, in this process's memory.

    `limits`' own MemoryStorage runs a background expiry thread; this keeps the same arithmetic (the previous window's
    count, weighted by how much of it the sliding window still covers) in a plain dict.
    """

    MAX_KEYS = 100_000  # past this, windows that ended are dropped (bounded memory under many addresses)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._windows: dict[str, tuple[int, int, int]] = {}  # key -> (window number, count in it, count before)
        self._lock = threading.Lock()
        self._clock = clock

    def hit(self, item: RateLimitItem, key: str) -> tuple[bool, float]:
        """Count one request if the limit allows it: (allowed, a hint of the seconds to wait when not)."""
        length = item.get_expiry()
        now = self._clock()
        window = int(now // length)
        with self._lock:
            number, current, previous = self._windows.get(key, (window, 0, 0))
            if number != window:
                current, previous = 0, current if number == window - 1 else 0
            weighted = previous * (1 - (now % length) / length) + current
            allowed = weighted + 1 <= item.amount
            self._windows[key] = (window, current + allowed, previous)
            if len(self._windows) > self.MAX_KEYS:
                self._windows = {k: v for k, v in self._windows.items() if v[0] >= window - 1}
        return allowed, 0.0 if allowed else length - now % length  # a hint: when this window ends


class Budget:
    """One limit (`"30/minute"`, `"10 per 5 minutes"`, several separated by `;`), spent by calling it with an identity.

    `storage`: where the counts live (default: this process's memory). Storage trouble never refuses a request:
    counting carries on in this process's memory and the storage is tried again after `STORAGE_RETRY_SECONDS`.
    """

    def __init__(
        self,
        limit: str,
        scope: str,
        message: str,
        code: str,
        storage: Storage | None = None,
        error: type[RateLimited] | type[UpstreamUnavailable] = RateLimited,
        on_refused: Callable[[str], None] = lambda scope: None,
    ):
        self.limits = parse_many(limit)
        self.scope, self.message, self.code, self.error, self.on_refused = scope, message, code, error, on_refused
        self._local = LocalCounter()
        self._shared = SlidingWindowCounterRateLimiter(storage) if storage is not None else None
        self._shared_down_until = 0.0

    def __call__(self, identity_source: str) -> None:
        """Spend one request for `identity_source`, or raise `RateLimited` with the seconds until one is free."""
        # Counter keys never hold a user id or address in clear.
        identity = hashlib.sha256(identity_source.encode("utf-8", "replace")).hexdigest()[:32]
        for item in self.limits:
            allowed, wait = self._hit(item, identity)
            if not allowed:
                self.on_refused(self.scope)
                raise self.error(self.message, code=self.code, retry_after=max(1, math.ceil(wait)))

    def _hit(self, item: RateLimitItem, identity: str) -> tuple[bool, float]:
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                if self._shared.hit(item, KEY_PREFIX, self.scope, identity):
                    return True, 0.0
                reset_at = self._shared.get_window_stats(item, KEY_PREFIX, self.scope, identity).reset_time
                return False, reset_at - time.time()
            except Exception:  # noqa: BLE001 - storage trouble never becomes a 500
                self._shared_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
        return self._local.hit(item, f"{self.scope}/{identity}")


def shared_storage(settings: Settings) -> Storage | None:
    """The Redis storage for limits shared across workers and instances (None without REDIS_URL)."""
    if not settings.redis_url:
        return None
    uri = "redis+" + settings.redis_url if settings.redis_url.startswith("unix://") else settings.redis_url
    options = {"socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout}
    if redis_scheme(settings.redis_url) not in NODE_SCHEMES:
        # As the link cache's client: after a failover behind the same address, reconnect instead of counting
        # in each process's memory (limits passes these options to redis.from_url).
        options["retry_on_error"] = [ReadOnlyError]
    return storage_from_string(uri, **options)


def user_budgets(
    settings: Settings, on_refused: Callable[[str], None] = lambda scope: None
) -> tuple[Budget | None, Callable[[str], None] | None]:
    """(requests per user, upstream calls per user and for the whole account), or (None, None) when limits are off."""
    if not settings.rate_limit_enabled:
        return None, None
    requests = Budget(
        settings.rate_limit_per_user,
        "user",
        "Too many requests for this user. Wait a moment.",
        "rate_limited",
        on_refused=on_refused,
    )
    storage = shared_storage(settings)
    per_user = Budget(
        settings.rate_limit_upstream_per_user,
        "upstream",
        "This user has asked Ayrshare for new links too often. Wait a few minutes and try again.",
        "upstream_budget_spent",
        storage=storage,
        on_refused=on_refused,
    )
    account = Budget(
        settings.rate_limit_upstream_global,
        "upstream-global",
        "The service has asked Ayrshare for many new links in a short time and is pausing. Try again shortly.",
        "upstream_budget_global",
        storage=storage,
        error=UpstreamUnavailable,
        on_refused=on_refused,
    )

    def spend_upstream(user: str) -> None:
        per_user(user)  # first: one user's flood must not spend everyone's budget
        account("account")

    return requests, spend_upstream


def connect_email_budget(settings: Settings, on_refused: Callable[[str], None] = lambda scope: None) -> Budget | None:
    """`CONNECT_EMAIL_PER_USER`: each Connect Accounts email, shared across instances (None when limits are off)."""
    if not settings.rate_limit_enabled:
        return None
    return Budget(
        settings.connect_email_per_user,
        "email",
        "This user has been sent the Connect Accounts email too often. Wait before sending another.",
        "email_budget_spent",
        storage=shared_storage(settings),
        on_refused=on_refused,
    )


def profile_create_budget(settings: Settings, on_refused: Callable[[str], None] = lambda scope: None) -> Callable:
    """`PROFILE_CREATE_MAX_PER_HOUR`: each profile created at Ayrshare, account-wide. Always on: profiles cost money."""
    budget = Budget(
        f"{settings.profile_create_max_per_hour} per hour",
        "profile-create",
        "The service has created PROFILE_CREATE_MAX_PER_HOUR Ayrshare profiles in the last hour. Try again later.",
        "profile_create_limit",
        storage=shared_storage(settings),
        on_refused=on_refused,
    )
    return lambda user: budget("account")


def address_key(address: str | None) -> str:
    """What the per-address limit counts: the IPv4 address, or the /64 an IPv6 address belongs to."""
    try:
        parsed = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return address or "unknown"  # a unix socket peer or other non-IP value
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def init_app(app: Flask, settings: Settings, on_refused: Callable[[str], None] = lambda scope: None) -> None:
    """Spend the per-address limit before every /connect request (refused ones included)."""
    if not settings.rate_limit_enabled:
        return
    per_address = Budget(
        settings.rate_limit_per_address, "addr", RateLimited.message, "rate_limited", on_refused=on_refused
    )

    @app.before_request
    def _spend_address_budget() -> None:
        if request.endpoint in CONNECT_ENDPOINTS and request.method != "OPTIONS":
            per_address(address_key(request.remote_addr))
