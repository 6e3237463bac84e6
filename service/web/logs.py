"""JSON logs on stdout, one line per request, with secrets scrubbed from every record as a last line of defence.

Request lines carry the request id (from a sane `X-Request-ID`, else generated, and echoed back), route, status,
latency, cache outcome, upstream latency and user id, never the query string, which holds link signatures.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime

from flask import Flask, Response, g, request

from ..config.settings import invoked_from_flask_cli

_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# Signed-link signatures and linking-URL tokens in any URL a library logs (gunicorn logs request URIs on errors).
_SIGNED_QUERY_VALUE = re.compile(r"\b(signature|jwt|session)=[^&\s\"'#]+", re.IGNORECASE)
_SESSION_TOKEN = re.compile(r"ayr_ls_[A-Za-z0-9_-]+")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

request_log = logging.getLogger("ayrshare_connect.request")


class RedactingFilter(logging.Filter):
    """Replaces secret values, JWT-shaped text, Link Session tokens and signed-link query values in every field of a
    record."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        # Each line of a multi-line secret (a PEM body) counts on its own; trivially short values are skipped.
        values = {part.strip() for secret in secrets for part in [secret, *secret.splitlines()]}
        values = sorted((v for v in values if len(v) >= 8), key=len, reverse=True)  # longest first: replaced whole
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def scrub(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub("[redacted]", text)
        text = _SIGNED_QUERY_VALUE.sub(r"\1=[redacted]", text)
        text = _SESSION_TOKEN.sub("[redacted-session]", text)
        return _JWT_SHAPE.sub("[redacted-jwt]", text)

    def scrub_value(self, value: object) -> object:
        """Plain numbers and None as they are; anything else as scrubbed text (non-text values as JSON)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.scrub(value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":")))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        fields = {name: record.__dict__[name] for name in record.__dict__.keys() - _STANDARD_ATTRS}
        # One look at all text fields together: a clean record of plain values (nearly every one) is left as it is.
        plain = all(value is None or isinstance(value, str | bool | int | float) for value in fields.values())
        texts = "\0".join(value for value in fields.values() if isinstance(value, str))
        if not plain or self.scrub(texts) != texts:
            record.__dict__.update({name: self.scrub_value(value) for name, value in fields.items()})
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def iso_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds (2024-05-01T12:00:00.123Z), what log pipelines parse without being told."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """ts, level, logger, msg, then the record's own fields (`extra=`), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": iso_timestamp(record.created), "level": record.levelname.lower(), "logger": record.name}
        entry["msg"] = record.getMessage()
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, separators=(",", ":"))


class CurrentStreamHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` / `sys.stderr` is when a record is emitted, not when the app was built (test
    runners and some process managers swap them)."""

    def __init__(self, stream_name: str):
        super().__init__()
        self.stream_name = stream_name

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self.stream_name)  # not setStream: it would flush the old one, perhaps closed
        super().emit(record)


def configure_logging(level: str, secrets: list[str]) -> RedactingFilter:
    """Route the service's loggers to stdout as JSON through the redactor (idempotent across app instances)."""
    redactor = RedactingFilter(secrets)
    # Under the `flask` CLI, stdout belongs to the command's output (`sign-url` is piped into scripts).
    handler = CurrentStreamHandler("stderr" if invoked_from_flask_cli() else "stdout")
    handler.setFormatter(JsonFormatter())
    handler.addFilter(redactor)
    for name in ("service", request_log.name):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # gunicorn's own error log prints request URIs (with signatures) when a request fails or is malformed.
    gunicorn_errors = logging.getLogger("gunicorn.error")
    for old in [f for f in gunicorn_errors.filters if isinstance(f, RedactingFilter)]:
        gunicorn_errors.removeFilter(old)
    gunicorn_errors.addFilter(redactor)
    return redactor


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_request() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        g.cache_outcome = g.upstream_seconds = g.user = g.auth = g.link_flow = None

    @app.after_request
    def _log_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if request.endpoint in ("static", "metrics.metrics") or not request_log.isEnabledFor(logging.INFO):
            return response
        started, upstream_seconds = g.get("started"), g.get("upstream_seconds")
        request_log.info(
            "request",
            extra={
                "request_id": g.get("request_id", ""),
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "path": request.path,
                "status": response.status_code,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started is not None else None,
                "cache": g.get("cache_outcome"),
                "link_flow": g.get("link_flow"),
                "upstream_ms": None if upstream_seconds is None else round(upstream_seconds * 1000, 1),
                "user": g.get("user"),
                "auth": g.get("auth"),
            },
        )
        return response
