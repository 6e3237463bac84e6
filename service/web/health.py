"""Liveness and readiness: `/healthz` (the process serves) and `/readyz` (configuration loaded, cache and database
reachable, database migrated), which names the dependency that failed."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .schemas import HealthSchema, ReadySchema

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(HealthSchema().dump({"status": "ok"}))


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    store = current_app.extensions["link_store"]
    database = current_app.extensions["database"]
    checks = {"config": "ok", "cache": "ok" if store.ping() else "failing", "database": database.ping()}
    ready = all(state == "ok" for state in checks.values())
    body = {"status": "ready" if ready else "not_ready", "cache_backend": store.name, "checks": checks}
    if checks["cache"] != "ok":
        body["error"] = {"code": "cache_unreachable", "message": "Redis does not answer PING: check REDIS_URL."}
    elif checks["database"] == "failing":
        body["error"] = {"code": "database_unreachable", "message": "The database does not answer: check DATABASE_URL."}
    elif checks["database"] != "ok":
        body["error"] = {
            "code": "database_not_migrated",
            "message": "The database schema is older than this code: run `flask --app service db upgrade`.",
        }
    return jsonify(ReadySchema().dump(body)), 200 if ready else 503
