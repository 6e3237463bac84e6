"""`GET /connect/<user>` and `/connect/<user>/accounts`: lift the request into plain values, call `ConnectService`
(and `UserAccounts`), and shape the answer.

The link leaves as a `302 Location` or, when the caller's Accept prefers JSON, as `200 {"url", "expiresAt", "cached"}`;
both carry `Cache-Control: no-store` and `Referrer-Policy: no-referrer`, as the URL is a secret.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..auth import PresentedCredentials
from ..links import ConnectService, Timings
from ..timefmt import iso_time
from ..upstream import Link
from .errors import NO_STORE_HEADERS, wants_json
from .schemas import LinkSchema, NetworksSchema

bp = Blueprint("connect", __name__)


@bp.get("/connect/<user>")
def connect(user: str) -> Response:
    service: ConnectService = current_app.extensions["connect"]
    timings = Timings()
    try:
        caller, link = service.link_for(user, PresentedCredentials.from_request(request), request.args, timings)
    finally:
        g.upstream_seconds = timings.upstream_seconds
    g.user, g.auth, g.cache_outcome, g.link_flow = user, caller.kind, link.source, service.settings.link_flow
    return link_response(link)


@bp.get("/connect/<user>/accounts")
def accounts(user: str) -> Response:
    """The networks the user has linked (names only), for the page to show after "Done"."""
    service: ConnectService = current_app.extensions["connect"]
    caller = service.authorize(user, PresentedCredentials.from_request(request))
    g.user, g.auth = user, caller.kind
    service.spend_request_budget(user)  # a page polling this shares the user's /connect budget
    linked = current_app.extensions["accounts"].read(user)
    response = jsonify(NetworksSchema().dump({"networks": list(linked.networks)}))
    response.headers.update(NO_STORE_HEADERS)
    return response


def link_response(link: Link) -> Response:
    if wants_json():
        response = jsonify(
            LinkSchema().dump({"url": link.url, "expiresAt": iso_time(link.expires_at), "cached": link.cached})
        )
    else:
        response = link_redirect(link.url)
    response.headers.update(NO_STORE_HEADERS)
    return response


def link_redirect(url: str) -> Response:
    """A 302 with no body: browsers follow Location, and the linking URL then appears once, not twice."""
    response = Response(status=302, headers={"Location": url})
    del response.headers["Content-Type"]
    return response
