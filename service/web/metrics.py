"""Prometheus metrics: the metric objects, the hooks that feed them, and `GET /metrics`.

Under gunicorn each worker writes its values to `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode, set
up by config/gunicorn.conf.py) and a scrape sums them; without that variable the default registry is used. By
default gunicorn's master serves them on `METRICS_BIND` (0.0.0.0:9100) and `/metrics` here answers 404 unless
`METRICS_BIND=main`.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, multiprocess

from ..config.schema import METRICS_ON_MAIN_PORT

PREFIX = "ayrshare_connect"
CIRCUIT_STATES = ("closed", "open", "half_open")
# Link sources (Link.source, the log line's `cache` field) → the cache result they count as.
CACHE_RESULTS = {"cache": "hit", "upstream": "miss", "shared": "shared", "stale": "stale", "direct": "bypass"}

REQUESTS = Counter(
    f"{PREFIX}_http_requests", "HTTP requests answered, by route template and status.", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE = Counter(
    f"{PREFIX}_cache_lookups",
    "Linking URLs served, by how they were obtained: hit (from the cache), miss (this request called Ayrshare), "
    "shared (another request's call), stale (stale-if-error), bypass (Redis unavailable, called Ayrshare directly); "
    "and by the link flow that made them (session or jwt).",
    ["flow", "result"],
)
SINGLE_FLIGHT_WAITS = Counter(
    f"{PREFIX}_single_flight_waits", "Requests that waited for another request's Ayrshare call instead of making one."
)
REDIS_ERRORS = Counter(f"{PREFIX}_redis_errors", "Redis operations that failed or timed out (the service carried on).")
UPSTREAM_CALLS = Counter(
    f"{PREFIX}_upstream_calls",
    "Calls to Ayrshare for a new linking URL (a Link Session or generateJWT, by flow), by outcome (ok or the error "
    "code).",
    ["flow", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    f"{PREFIX}_upstream_call_duration_seconds",
    "Duration of calls to Ayrshare for a new linking URL (retries included), whatever their outcome.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30),
)
CACHE_REJECTED = Counter(
    f"{PREFIX}_cache_rejected",
    "Cached values not used: unreadable (written by someone else, or under another key) or holding a URL that fails "
    "the linking-URL check. Each is a miss; any count means something else writes to this Redis.",
)
RATE_LIMITED = Counter(
    f"{PREFIX}_rate_limited",
    "Requests refused by a rate limit, by limit: addr, user, upstream (per user), upstream-global (the account), "
    "email.",
    ["limit"],
)
# One-hot per state, combined with max over live workers: state="open" is 1 while any worker's breaker is open.
CIRCUIT_STATE = Gauge(
    f"{PREFIX}_circuit_state",
    "Circuit breaker in front of Ayrshare: 1 for the current state (max over live workers).",
    ["state"],
    multiprocess_mode="livemax",
)

_BROKER_EVENTS = {"wait": SINGLE_FLIGHT_WAITS, "redis_error": REDIS_ERRORS, "cache_rejected": CACHE_REJECTED}

bp = Blueprint("metrics", __name__)


PROFILE_EVENTS = Counter(
    f"{PREFIX}_profile_creations",
    "Profile creations at Ayrshare by outcome: created, refused, duplicate_title, and those an operator must look at "
    "(outcome_unknown, not_stored, unresolved; see flask profiles pending).",
    ["outcome"],
)


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: the sum over every worker under gunicorn, else this process's own registry."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # prometheus-client's documented switch for multiprocess mode
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


# -- hooks the rest of the service calls --------------------------------------------------------------------------
def broker_event(event: str) -> None:
    """`LinkBroker.on_event`: counts single-flight waits and Redis errors. Stale serves are counted per request."""
    counter = _BROKER_EVENTS.get(event)
    if counter is not None:
        counter.inc()


def observe_upstream_call(flow: str, outcome: str, seconds: float) -> None:
    UPSTREAM_CALLS.labels(flow, outcome).inc()
    UPSTREAM_SECONDS.observe(seconds)


WEBHOOKS_RECEIVED = Counter(
    f"{PREFIX}_webhooks_received",
    "Ayrshare webhooks by outcome: accepted, duplicate, unknown_ref_id, ignored (other actions), or why one was "
    "refused (bad_signature, missing_signature, stale_timestamp, ...).",
    ["outcome"],
)
WEBHOOKS_FORWARDED = Counter(
    f"{PREFIX}_webhooks_forwarded",
    "Attempts to pass an event on to WEBHOOK_FORWARD_URL: delivered, retry (will be tried again), failed (gave up).",
    ["result"],
)


def webhook_received(outcome: str) -> None:
    WEBHOOKS_RECEIVED.labels(outcome).inc()


def webhook_forwarded(result: str) -> None:
    WEBHOOKS_FORWARDED.labels(result).inc()


def profile_event(outcome: str) -> None:
    PROFILE_EVENTS.labels(outcome).inc()


def cache_rejected() -> None:
    CACHE_REJECTED.inc()


def rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def set_circuit_state(state: str) -> None:
    """Record the circuit breaker's state: "closed", "open" or "half_open" (for the breaker to call on change)."""
    if state not in CIRCUIT_STATES:
        raise ValueError(f"unknown circuit state {state!r}; expected one of {', '.join(CIRCUIT_STATES)}")
    for name in CIRCUIT_STATES:
        CIRCUIT_STATE.labels(name).set(1 if name == state else 0)


def observe_request(
    route: str, status: int, seconds: float, cache_outcome: str | None, flow: str | None = None
) -> None:
    REQUESTS.labels(route, str(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)
    if cache_outcome is not None:
        CACHE.labels(flow or "", CACHE_RESULTS.get(cache_outcome, cache_outcome)).inc()


# -- Flask wiring ---------------------------------------------------------------------------------------------
@bp.get("/metrics")
def metrics() -> Response:
    if current_app.config["SETTINGS"].metrics_bind != METRICS_ON_MAIN_PORT:
        abort(404)  # served on METRICS_BIND by gunicorn's master instead, away from the public port
    # prometheus-client's own WSGI app: it negotiates the format (text or OpenMetrics) from Accept.
    return Response.from_app(make_wsgi_app(scrape_registry()), request.environ)


def init_app(app: Flask) -> None:
    set_circuit_state("closed")
    app.register_blueprint(bp)

    @app.after_request
    def _count_request(response: Response) -> Response:
        if request.endpoint == "metrics.metrics":
            return response
        # The route template, never the path: paths carry user ids and would make the label set unbounded.
        route = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("started")  # set by the request log's before_request hook (runs first)
        seconds = time.perf_counter() - started if started is not None else 0.0
        observe_request(route, response.status_code, seconds, g.get("cache_outcome"), g.get("link_flow"))
        return response
