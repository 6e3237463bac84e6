"""Structured JSON logs, one line per request, with secrets scrubbed as a last line of defence.

The code never logs a secret, JWT or linking URL on purpose; `RedactingFilter` makes sure a mistake cannot either: it
replaces every configured secret value and anything shaped like a JWT before a record is formatted. Request lines
carry the request id (honoured from `X-Request-ID` when it looks sane, else generated, and echoed back), route, status,
latency, cache outcome, upstream latency and user id — never the query string, which holds link signatures.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

from flask import Flask, Response, g, request

from .cli import invoked_from_flask_cli

_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# Signed-link signatures and linking-URL tokens in any URL a library logs (gunicorn logs request URIs on errors).
_SIGNED_QUERY_VALUE = re.compile(r"\b(signature|jwt)=[^&\s\"'#]+", re.IGNORECASE)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# One encoder for every line: `json.dumps` with options builds a new JSONEncoder on each call.
_encode_json = json.JSONEncoder(default=str, separators=(",", ":")).encode


class RedactingFilter(logging.Filter):
    """Replaces secret values, JWT-shaped text and signed-link query values in every field of a record."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        # Each line of a multi-line secret (a PEM body) counts on its own; trivially short values are skipped.
        values = {part.strip() for secret in secrets for part in [secret, *secret.splitlines()]}
        values = sorted((v for v in values if len(v) >= 8), key=len, reverse=True)  # longest first: replaced whole
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def scrub(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub("[redacted]", text)
        # The cheap substring tests skip the costlier patterns on the short values most fields hold (a request line
        # has nine); a field without "=" or "eyJ" cannot match them.
        if "=" in text:
            text = _SIGNED_QUERY_VALUE.sub(r"\1=[redacted]", text)
        if "eyJ" in text:
            text = _JWT_SHAPE.sub("[redacted-jwt]", text)
        return text

    def scrub_fields(self, fields: dict) -> dict:
        """`fields` with every text (and anything not a plain number) scrubbed; non-text values become JSON text."""
        texts = {}
        encoded = False
        for name, value in fields.items():
            if value is None or isinstance(value, bool | int | float):
                continue
            if not isinstance(value, str):
                value, encoded = _encode_json(value), True
            texts[name] = value
        # One look at all the texts together first: on a clean record (nearly every one) that is the whole cost, and
        # a clean record of plain values is returned as it came, without a copy.
        if texts and self.scrub(joined := "\0".join(texts.values())) != joined:
            texts = {name: self.scrub(text) for name, text in texts.items()}
        elif not encoded:
            return fields
        return fields | texts

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        fields = record.__dict__
        fields.update(self.scrub_fields({name: fields[name] for name in fields.keys() - _STANDARD_ATTRS}))
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def json_line(created: float, level: str, logger: str, msg: str, fields: dict, exc_text: str | None = None) -> str:
    """The shape of every log line: ts, level, logger, msg, then the record's own fields."""
    entry = {"ts": round(created, 3), "level": level, "logger": logger, "msg": msg, **fields}
    if exc_text:
        entry["exc"] = exc_text
    return _encode_json(entry)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        return json_line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), fields, record.exc_text
        )


class _StandardStreamHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` / `sys.stderr` is when a record is emitted, not when the app was built
    (test runners and some process managers swap them)."""

    def __init__(self, stream_name: str, redactor: RedactingFilter):
        self._stream_name = stream_name
        self.redactor = redactor
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(redactor)

    @property
    def stream(self):
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; ours is always looked up
        pass

    def write_fields(self, logger: str, msg: str, fields: dict) -> None:
        """Write one info line straight from its fields: the same shape, redaction, lock and stream as a record's,
        without building a LogRecord and passing it through filter and formatter (see `log_request_line`)."""
        line = json_line(time.time(), "info", logger, msg, self.redactor.scrub_fields(fields)) + self.terminator
        with self.lock:
            try:
                stream = self.stream
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):  # stdout closed or gone: a log line never fails a request
                pass


def configure_logging(level: str, secrets: list[str]) -> RedactingFilter:
    """Route the service's loggers to stdout as JSON through the redactor (idempotent across app instances)."""
    redactor = RedactingFilter(secrets)
    # Our lines never print the caller's file/line or the process name: skip computing them on every record (the
    # logging HOWTO's "Optimization" section); measured on the cache-hit path in BENCHMARKS.md.
    logging._srcfile = None
    logging.logMultiprocessing = False
    logging.logThreads = False
    # Under the `flask` CLI, stdout belongs to the command's output (`sign-url` is piped into scripts).
    handler = _StandardStreamHandler("stderr" if invoked_from_flask_cli() else "stdout", redactor)
    for name in ("service", "ayrshare_connect.request"):
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


request_log = logging.getLogger("ayrshare_connect.request")


def log_request_line(fields: dict) -> None:
    """The one line per request. Written by the service's own handler directly (`write_fields`): the usual
    LogRecord -> filter -> formatter trip measured ~25 % of a whole cache hit (BENCHMARKS.md, "The hot path").
    Any other handler attached to the logger gets an ordinary record."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    for handler in request_log.handlers:
        if isinstance(handler, _StandardStreamHandler):
            handler.write_fields(request_log.name, "request", fields)
        else:
            handler.handle(
                request_log.makeRecord(request_log.name, logging.INFO, "", 0, "request", None, None, extra=fields)
            )


def init_app(app: Flask) -> None:
    # Both hooks run on every request: they take `g` and `request` out of their proxies once (each proxy access is a
    # context lookup) and read plain attributes from there on.
    @app.before_request
    def _start_request() -> None:
        state = g._get_current_object()
        state.started = time.perf_counter()
        # Straight from the WSGI environ: Werkzeug's `headers.get` raises and catches an exception for a missing one.
        incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
        state.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        state.cache_outcome = state.upstream_seconds = state.user = state.auth = None

    @app.after_request
    def _log_request(response: Response) -> Response:
        state, req = g._get_current_object(), request._get_current_object()
        request_id = getattr(state, "request_id", "")
        response.headers["X-Request-ID"] = request_id
        if req.endpoint in ("static", "metrics.metrics") or not request_log.isEnabledFor(logging.INFO):
            return response
        started = getattr(state, "started", None)
        upstream_seconds = getattr(state, "upstream_seconds", None)
        log_request_line(
            {
                "request_id": request_id,
                "method": req.method,
                "route": req.url_rule.rule if req.url_rule else None,
                "path": req.path,
                "status": response.status_code,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started is not None else None,
                "cache": getattr(state, "cache_outcome", None),
                "upstream_ms": None if upstream_seconds is None else round(upstream_seconds * 1000, 1),
                "user": getattr(state, "user", None),
                "auth": getattr(state, "auth", None),
            }
        )
        return response
