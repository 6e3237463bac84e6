"""Prometheus metrics: the metric objects, the hooks that feed them, and `GET /metrics`.

Under gunicorn every worker is its own process, so the counters live in prometheus-client's multiprocess mode: each
process writes its values to memory-mapped files in `PROMETHEUS_MULTIPROC_DIR` (set up by config/gunicorn.conf.py
before this module is imported) and a scrape sums them. Without that variable (tests, `flask run`) the default
in-process registry is used. Metric objects are created once, at import; the per-request cost is a few increments.

`METRICS_BIND` moves the endpoint off the public port: gunicorn's master then serves the same numbers on that address
(see config/gunicorn.conf.py) and `/metrics` on the main app answers 404.
"""

from __future__ import annotations

import functools
import os
import time

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

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
    "shared (another request's call), stale (stale-if-error), bypass (Redis unavailable, called Ayrshare directly).",
    ["result"],
)
SINGLE_FLIGHT_WAITS = Counter(
    f"{PREFIX}_single_flight_waits", "Requests that waited for another request's Ayrshare call instead of making one."
)
REDIS_ERRORS = Counter(f"{PREFIX}_redis_errors", "Redis operations that failed or timed out (the service carried on).")
UPSTREAM_CALLS = Counter(
    f"{PREFIX}_upstream_calls", "Calls to Ayrshare generateJWT, by outcome (ok or the error code).", ["outcome"]
)
UPSTREAM_SECONDS = Histogram(
    f"{PREFIX}_upstream_call_duration_seconds",
    "Duration of calls to Ayrshare generateJWT (retries included), whatever their outcome.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30),
)
# One-hot per state. Per-process values are combined with max over live processes: state="open" is 1 while any
# breaker in use is open, which is what an alert wants to know. A worker with a fetcher (service/fetcher.py) reports
# all zeros and its fetcher the state of the breaker that actually guards the calls.
CIRCUIT_STATE = Gauge(
    f"{PREFIX}_circuit_state",
    "Circuit breaker in front of Ayrshare: 1 for the current state (max over live workers).",
    ["state"],
    multiprocess_mode="livemax",
)

_BROKER_EVENTS = {"wait": SINGLE_FLIGHT_WAITS, "redis_error": REDIS_ERRORS}

bp = Blueprint("metrics", __name__)


def exposition() -> bytes:
    """The current values in Prometheus text format, summed over every worker when running under gunicorn."""
    # prometheus-client chose the value store from PROMETHEUS_MULTIPROC_DIR when it was imported; follow that choice.
    if values.ValueClass is not values.MutexValue:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# -- hooks the rest of the service calls --------------------------------------------------------------------------
def broker_event(event: str) -> None:
    """`LinkBroker.on_event`: counts single-flight waits and Redis errors. Stale serves are counted per request."""
    counter = _BROKER_EVENTS.get(event)
    if counter is not None:
        counter.inc()


def observe_upstream_call(outcome: str, seconds: float) -> None:
    UPSTREAM_CALLS.labels(outcome).inc()
    UPSTREAM_SECONDS.observe(seconds)


def set_circuit_state(state: str) -> None:
    """Record the circuit breaker's state: "closed", "open" or "half_open" (for the breaker to call on change)."""
    if state not in CIRCUIT_STATES:
        raise ValueError(f"unknown circuit state {state!r}; expected one of {', '.join(CIRCUIT_STATES)}")
    for name in CIRCUIT_STATES:
        CIRCUIT_STATE.labels(name).set(1 if name == state else 0)


def set_circuit_state_elsewhere() -> None:
    """This process's breaker is not the one in use (its fetcher's is: service/fetcher.py): 0 for every state, so
    the max over processes shows the fetcher's."""
    for name in CIRCUIT_STATES:
        CIRCUIT_STATE.labels(name).set(0)


def forget_this_process() -> None:
    """A process that is exiting on its own (a fetcher): drop its live gauges from the sums, as gunicorn's
    `child_exit` hook does for a worker. Nothing to do outside multiprocess mode."""
    if values.ValueClass is not values.MutexValue:  # prometheus-client picked multiprocess mode at import
        multiprocess.mark_process_dead(os.getpid())


def observe_request(route: str, status: int, seconds: float, cache_outcome: str | None) -> None:
    requests, durations = _request_series(route, status)
    requests.inc()
    durations.observe(seconds)
    if cache_outcome is not None:
        _cache_series(cache_outcome).inc()


# `labels()` validates and locks on every call; the label sets are few (route templates x statuses), so the series
# objects are looked up once.
@functools.lru_cache(maxsize=1024)
def _request_series(route: str, status: int) -> tuple[Counter, Histogram]:
    return REQUESTS.labels(route, str(status)), REQUEST_SECONDS.labels(route)


@functools.lru_cache(maxsize=64)
def _cache_series(cache_outcome: str) -> Counter:
    return CACHE.labels(CACHE_RESULTS.get(cache_outcome, cache_outcome))


# -- Flask wiring ---------------------------------------------------------------------------------------------
@bp.get("/metrics")
def metrics() -> Response:
    if current_app.config["SETTINGS"].metrics_bind:
        abort(404)  # served on METRICS_BIND by gunicorn's master instead, away from the public port
    return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    set_circuit_state("closed")
    app.register_blueprint(bp)

    @app.after_request
    def _count_request(response: Response) -> Response:
        state, req = g._get_current_object(), request._get_current_object()
        if req.endpoint == "metrics.metrics":
            return response
        # The route template, never the path: paths carry user ids and would make the label set unbounded.
        route = req.url_rule.rule if req.url_rule else "unmatched"
        started = getattr(state, "started", None)  # set by the request log's before_request hook (runs first)
        seconds = time.perf_counter() - started if started is not None else 0.0
        observe_request(route, response.status_code, seconds, getattr(state, "cache_outcome", None))
        return response
