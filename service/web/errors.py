"""How errors are shown: JSON callers get RFC 9457 problem details (`application/problem+json`), browsers a small HTML
page, both with the error's status, `Cache-Control: no-store` and `Retry-After` when there is one.

A problem's `type` is `PROBLEM_TYPE_BASE` + its code, `title` the code in words (both stable per code), `detail` the
message; `code` and `requestId` are extension members, and so is the older `error: {code, message}` member, kept so
that clients written against it go on working.
"""

from __future__ import annotations

import logging

from flask import Flask, Request, Response, g, json, render_template, request
from werkzeug.exceptions import HTTPException

from ..errors import ServiceError
from .schemas import ProblemSchema

# An identifier per error code (RFC 9457 §3.1.1: it need not resolve); documented in docs/operations.md.
PROBLEM_TYPE_BASE = "https://ayrshare-connect.dev/problems/"
PROBLEM_JSON = "application/problem+json"

# On every answer that may carry or follow a signed link: no browser, proxy or Referer header keeps a copy.
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def wants_json(req: Request | None = None) -> bool:
    """True when the caller's Accept (of `req`, default the current request) prefers JSON over HTML (fetch/XHR
    callers, internal backends).

    A bare `*/*` (curl, a plain link) is not a preference, so it gets the redirect / HTML page.
    """
    accept = (req or request).accept_mimetypes
    json_q = max(accept["application/json"], accept[PROBLEM_JSON])
    html_q = accept["text/html"]
    named = any(value in ("application/json", PROBLEM_JSON) for value, _ in accept)
    return json_q > html_q or (named and json_q > 0 and json_q >= html_q)


def problem(error: ServiceError, request_id: str) -> dict:
    """The error as an RFC 9457 problem details object (see `ProblemSchema` in service/web/schemas.py)."""
    return ProblemSchema().dump(
        {
            "type": PROBLEM_TYPE_BASE + error.code,
            "title": error.code.replace("_", " ").capitalize(),
            "status": error.status,
            "detail": error.message,
            "code": error.code,
            "requestId": request_id,
            "error": {"code": error.code, "message": error.message},
        }
    )


def render_error(error: ServiceError) -> Response:
    # The internal API and the webhook receiver are JSON only: their callers are backends, whatever Accept they send.
    if request.blueprint in ("internal", "webhooks") or wants_json():
        body = problem(error, g.get("request_id") or "")
        response = Response(json.dumps(body) + "\n", mimetype=PROBLEM_JSON)
    else:
        response = Response(
            render_template("error.html", status=error.status, code=error.code, message=error.message),
            mimetype="text/html",
        )
    response.status_code = error.status
    response.headers.update(NO_STORE_HEADERS)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, int(error.retry_after)))
    return response


def _http_exception_as_service_error(exc: HTTPException) -> ServiceError:
    # Werkzeug's own errors (404 for unknown routes, 405...) keep their status but get our body shape.
    error = ServiceError(exc.description or exc.name, code=exc.name.lower().replace(" ", "_"))
    error.status = exc.code or 500
    if exc.code == 404:
        error.message = "There is nothing at this address."
    return error


def init_app(app: Flask) -> None:
    app.register_error_handler(ServiceError, render_error)
    app.register_error_handler(HTTPException, lambda exc: render_error(_http_exception_as_service_error(exc)))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The traceback is needed to fix the bug; the log redactor strips secrets and JWT-shaped text from it.
        logging.getLogger("service").error("unhandled error", exc_info=exc, extra={"error_type": type(exc).__name__})
        return render_error(ServiceError())
