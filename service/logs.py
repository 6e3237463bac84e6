"""Structured JSON logs, one line per request, with secrets scrubbed as a last line of defence.

The code never logs a secret, JWT or linking URL on purpose; `RedactingFilter` makes sure a mistake cannot either: it
replaces every configured secret value and anything shaped like a JWT before a record is formatted. Request lines
carry the request id (honoured from `X-Request-ID` when it looks sane, else generated, and echoed back), route, status,
latency, cache outcome, upstream latency and user id — never the query string, which holds link signatures.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from pathlib import Path

from flask import Flask, Response, g, request

_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole; skip trivially short values.
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return _JWT_SHAPE.sub("[redacted-jwt]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, self.scrub(value))
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(level: str, secrets: list[str]) -> RedactingFilter:
    """Route the service's loggers to stdout as JSON through the redactor (idempotent across app instances)."""
    redactor = RedactingFilter(secrets)
    # Under the `flask` CLI, stdout belongs to the command's output (`sign-url` is piped into scripts).
    under_cli = Path(sys.argv[0]).name == "flask"
    handler = logging.StreamHandler(sys.stderr if under_cli else sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(redactor)
    for name in ("service", "ayrshare_connect.request"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return redactor


request_log = logging.getLogger("ayrshare_connect.request")


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_request() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.cache_outcome = None
        g.upstream_seconds = None
        g.user = None

    @app.after_request
    def _log_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if request.endpoint in ("static", "metrics.metrics"):
            return response
        request_log.info(
            "request",
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "path": request.path,
                "status": response.status_code,
                "latency_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
                "cache": g.get("cache_outcome"),
                "upstream_ms": None if g.get("upstream_seconds") is None else round(g.upstream_seconds * 1000, 1),
                "user": g.get("user"),
            },
        )
        return response
