"""How errors are shown: JSON callers get RFC 9457 problem details (`application/problem+json`), browsers a small HTML
page, both with the error's status, `Cache-Control: no-store` and `Retry-After` when there is one.

A problem's `type` is `PROBLEM_TYPE_BASE` + its code, `title` the code in words (both stable per code), `detail` the
message; `code` and `requestId` are extension members, and so is the older `error: {code, message}` member, kept so
that clients written against it go on working. The page has its own words for a person (`page_wording`): one
sentence of what happened and one of what to do, the code kept out of them (it is in `data-code` and the small print).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PageWording:
    """What an error page says. `kind`: "retry" (a passing failure: the same link works again later), "link" (this
    link cannot work: the app must make a fresh one) or "page" (not about a link at all: an unknown address...)."""

    kind: str
    heading: str
    happened: str
    todo: str


_FRESH_LINK = "Return to the app and click Connect again: it makes a fresh link."
_SIGN_IN_AGAIN = "Sign in to the app again, then click Connect."
_TELL_SUPPORT = "Return to the app and click Connect again; if this keeps happening, tell the app's support team."
_WAIT = "Wait a moment, then try again."
# What happened, per code a browser can meet on /connect/<user>; what to do, for each.
_LINK_WORDING = {
    "link_expired": ("This link has expired.", _FRESH_LINK),
    "bad_signature": ("This link was made for another user, or it was changed after it was made.", _FRESH_LINK),
    "options_not_signed": ("This link carries settings that were not signed with it.", _FRESH_LINK),
    "auth_required": ("This link is missing its signature.", _FRESH_LINK),
    "wrong_user": ("You are signed in as another user than the one this link is for.", _SIGN_IN_AGAIN),
    "bad_token": ("Your sign-in could not be checked.", _SIGN_IN_AGAIN),
    "token_expired": ("Your sign-in has expired.", _SIGN_IN_AGAIN),
    "forbidden": ("You may not connect social accounts for this user.", _SIGN_IN_AGAIN),
    "unknown_user": (
        "No social media profile is set up for this user yet.",
        "Ask the app's support team to set one up, then click Connect again.",
    ),
}
_RETRY_WORDING = {
    "rate_limited": ("There were too many attempts in a short time.", _WAIT),
    "upstream_refused": ("Ayrshare, which links the accounts, refused to open the linking page.", _TELL_SUPPORT),
    "profile_creation_in_progress": ("Your social media profile is still being set up.", _WAIT),
}
_PASSING = ("Ayrshare, which links the accounts, did not answer in time or is busy right now.", _WAIT)
_OUR_SIDE = ("Something went wrong on our side.", _WAIT)
_OTHER_LINK_PROBLEM = ("This link asks for something the service does not allow.", _TELL_SUPPORT)
_GO_BACK = "Check the address, or go back to the page you came from."


def page_wording(error: ServiceError, generic: bool = False) -> PageWording:
    """The page's words for `error`; `generic` for a failure that has nothing to do with a link (Werkzeug's own)."""
    if generic:
        if error.status == 404:
            return PageWording("page", "Page not found", "There is nothing at this address.", _GO_BACK)
        return PageWording("page", "This request cannot be answered", "This address does not answer it.", _GO_BACK)
    if error.status >= 500 or error.status == 429:
        # Ayrshare's failures are upstream_* (refused, unavailable, timeout, rate-limited, circuit open); the rest
        # (the database, the cache, a bug) are ours.
        happened, todo = _RETRY_WORDING.get(error.code) or (
            _PASSING if error.code.startswith("upstream_") else _OUR_SIDE
        )
        return PageWording("retry", "We could not open the linking page", happened, todo)
    happened, todo = _LINK_WORDING.get(error.code, _OTHER_LINK_PROBLEM)
    return PageWording("link", "This link cannot be used", happened, todo)


def render_error(error: ServiceError, generic: bool = False) -> Response:
    # The internal API and the webhook receiver are JSON only: their callers are backends, whatever Accept they send.
    if request.blueprint in ("internal", "webhooks") or wants_json():
        body = problem(error, g.get("request_id") or "")
        response = Response(json.dumps(body) + "\n", mimetype=PROBLEM_JSON)
    else:
        wording = page_wording(error, generic)
        response = Response(
            render_template("error.html", status=error.status, code=error.code, page=wording), mimetype="text/html"
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
    app.register_error_handler(
        HTTPException, lambda exc: render_error(_http_exception_as_service_error(exc), generic=True)
    )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The traceback is needed to fix the bug; the log redactor strips secrets and JWT-shaped text from it.
        logging.getLogger("service").error("unhandled error", exc_info=exc, extra={"error_type": type(exc).__name__})
        return render_error(ServiceError())
