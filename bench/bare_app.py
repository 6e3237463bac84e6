"""The comparison endpoint for the cache-hit benchmark: a bare Flask app answering `/connect/<user>` with the same 302.

No authentication, cache, logging or metrics: only routing and a redirect to a fixed linking URL of the real
shape and length (`BARE_REDIRECT_URL`, captured from the service by the harness), with the same no-store headers.
It is served by the same gunicorn command and config file as the service, so the difference between the two is the
service's own work on the hit path. With `BARE_REDIS_GET=1` it also reads one Redis key per request (`REDIS_URL`):
the least any design that keeps links only in Redis must do per hit.
"""

from __future__ import annotations

import os
import time

import redis
from flask import Flask, redirect

NO_STORE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def create_app() -> Flask:
    app = Flask(__name__)
    location = os.environ.get("BARE_REDIRECT_URL", "http://127.0.0.1/link")
    # The cold-burst floor: every request waits as long as the upstream would, then answers; no single-flight.
    delay = int(os.environ.get("BARE_DELAY_MS", "0")) / 1000
    store = redis.Redis.from_url(os.environ["REDIS_URL"]) if os.environ.get("BARE_REDIS_GET") == "1" else None

    @app.get("/connect/<user>")
    def connect(user: str):
        if delay:
            time.sleep(delay)
        if store is not None:
            store.get(f"bare:{user}")
        response = redirect(location, code=302)
        response.headers.update(NO_STORE_HEADERS)
        return response

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app
