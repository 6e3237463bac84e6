"""The service's error family and how errors are shown to callers.

Every failure a caller can see is a `ServiceError` with an HTTP status, a stable public `code` (a slug scripts can
match on) and a `message` that says what to fix. Messages are written by us, never copied from an upstream answer or
an exception, so no secret, token or linking URL can reach an error body through them.

JSON callers get `{"error": {"code", "message"}}`; browsers get a small HTML page with the same status.
"""

from __future__ import annotations

import logging

from flask import Flask, Request, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

# Header set on every error answer too: an error page can be the document that holds a signed link in its URL.
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class ServiceError(Exception):
    """A failure with a public status, code and message."""

    status = 500
    code = "internal_error"
    message = "The service failed unexpectedly. Try again; if it persists, check the service logs."

    def __init__(self, message: str | None = None, *, code: str | None = None, retry_after: int | None = None):
        super().__init__(message or self.message)
        if message:
            self.message = message
        if code:
            self.code = code
        self.retry_after = retry_after

    def public_fields(self) -> dict:
        """What a caller sees of this error, as data another process can answer with (our words only)."""
        return {"status": self.status, "code": self.code, "message": self.message, "retry_after": self.retry_after}

    @classmethod
    def from_public_fields(cls, fields: dict) -> ServiceError:
        """The error `public_fields` described; `ValueError` when they are not that shape."""
        try:
            error = cls(str(fields["message"]), code=str(fields["code"]), retry_after=fields["retry_after"])
            error.status = int(fields["status"])
        except (KeyError, TypeError, ValueError) as problem:
            raise ValueError("not an error's public fields") from problem
        return error


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class Unauthenticated(ServiceError):
    status = 401
    code = "auth_required"
    message = "This link needs a signature or a bearer token."


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"
    message = "This caller may not open this user's link."


class UnknownUser(ServiceError):
    status = 404
    code = "unknown_user"
    message = "No Ayrshare profile is configured for this user."


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"
    message = "Too many requests. Wait a moment and try again."


class UpstreamRefused(ServiceError):
    """Ayrshare answered, but with a refusal or something we cannot use (502)."""

    status = 502
    code = "upstream_refused"
    message = "Ayrshare refused the request."


class UpstreamUnavailable(ServiceError):
    """Ayrshare is unreachable, failing or rate-limiting us (503, with Retry-After)."""

    status = 503
    code = "upstream_unavailable"
    message = "Ayrshare is unavailable right now. Try again shortly."

    def __init__(self, message: str | None = None, *, code: str | None = None, retry_after: int | None = 5):
        super().__init__(message, code=code, retry_after=retry_after)


class UpstreamTimeout(ServiceError):
    status = 504
    code = "upstream_timeout"
    message = "Ayrshare did not answer in time. Try again shortly."


def wants_json(req: Request | None = None) -> bool:
    """True when the caller's Accept (of `req`, default the current request) prefers JSON over HTML (fetch/XHR
    callers, internal backends).

    A bare `*/*` (curl, a plain link) is not a preference, so it gets the redirect / HTML page.
    """
    req = req or request._get_current_object()
    header = req.environ.get("HTTP_ACCEPT", "").lower()  # not headers.get: it raises inside when missing
    if "json" not in header and "application/" not in header:
        return False  # JSON could only match through */*, which matches HTML just as well: skip parsing the header
    accept = req.accept_mimetypes
    json_q, html_q = accept["application/json"], accept["text/html"]
    named = any(value == "application/json" for value, _ in accept)
    return json_q > html_q or (named and json_q > 0 and json_q >= html_q)


def render_error(error: ServiceError) -> Response:
    if wants_json():
        response = jsonify(error={"code": error.code, "message": error.message})
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
