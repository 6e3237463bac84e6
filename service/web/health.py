"""Liveness and readiness: `/healthz` (the process serves) and `/readyz` (configuration loaded, cache reachable)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    store = current_app.extensions["link_store"]
    checks = {"config": "ok", "cache": "ok" if store.ping() else "failing"}
    ready = all(state == "ok" for state in checks.values())
    body = {"status": "ready" if ready else "not_ready", "cache_backend": store.name, "checks": checks}
    if not ready:
        body["error"] = {
            "code": "cache_unreachable",
            "message": "Redis does not answer PING: check REDIS_URL.",
        }
    return jsonify(body), 200 if ready else 503
