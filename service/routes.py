"""HTTP handlers for `/connect/<user>`: lift the request into plain values, call `ConnectService`, shape the answer.

A linking URL leaves the service either as a `302 Location` or, when the caller's Accept prefers JSON, as
`200 {"url", "expiresAt", "cached"}`. Both carry `Cache-Control: no-store` and `Referrer-Policy: no-referrer`: the JWT
in the URL holds the API key in readable claims, so no browser, proxy or Referer header may keep a copy.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, g, jsonify, request

from .callers import PresentedCredentials
from .connect import ConnectService, Timings
from .errors import NO_STORE_HEADERS, wants_json
from .links import Link
from .web_security import headers_for_non_html

REDIRECT_HEADERS = [*NO_STORE_HEADERS.items(), *headers_for_non_html()]

bp = Blueprint("connect", __name__)


@bp.get("/connect/<user>")
def connect(user: str) -> Response:
    service: ConnectService = current_app.extensions["connect"]
    presented = PresentedCredentials.from_request(request)
    timings = Timings()
    try:
        caller, link = service.link_for(user, presented, request.args, timings)
    finally:
        g.upstream_seconds = timings.upstream_seconds
    g.user = user
    g.cache_outcome = link.source
    return link_response(link)


def link_response(link: Link) -> Response:
    if wants_json():
        expires = datetime.fromtimestamp(link.expires_at, UTC).isoformat().replace("+00:00", "Z")
        response = jsonify(url=link.url, expiresAt=expires, cached=link.cached)
        response.headers.update(NO_STORE_HEADERS)
        return response
    # A bare 302 with every header it will carry, built in one go: no HTML body (browsers follow Location, and the
    # linking URL then appears once, not twice), and nothing left for the after-request hooks to add.
    return Response(status=302, headers=[("Location", link.url), *REDIRECT_HEADERS])
