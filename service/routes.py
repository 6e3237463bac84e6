"""HTTP handlers for `/connect/<user>`: lift the request into plain values, call `ConnectService`, shape the answer.

A linking URL leaves the service either as a `302 Location` or, when the caller's Accept prefers JSON, as
`200 {"url", "expiresAt", "cached"}`. Both carry `Cache-Control: no-store` and `Referrer-Policy: no-referrer`: the JWT
in the URL holds the API key in readable claims, so no browser, proxy or Referer header may keep a copy.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Request, Response, current_app, g, jsonify, request
from werkzeug.datastructures import Headers

from .callers import PresentedCredentials
from .connect import ConnectService, Timings
from .errors import NO_STORE_HEADERS, wants_json
from .links import Link
from .web_security import headers_for_non_html


class _PrecheckedHeaders(Headers):
    """Response headers whose values the caller has already checked, taken as they are: the link redirect skips
    Werkzeug's per-value check and its exception-raising membership test, which were two thirds of building it.
    Everything added later (`headers[...] = ...` in hooks) goes through Werkzeug's checks as usual."""

    def __init__(self, items: list[tuple[str, str]]):
        super().__init__()
        # The one attribute Headers keeps its pairs in; a list of our own, so a copy (`copy()` passes its list
        # here) never shares it with the original.
        self._list = list(items)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return super().__contains__(key)
        wanted = key.lower()
        return any(name.lower() == wanted for name, _ in self._list)


class LinkRedirect(Response):
    """The 302 to a linking URL, built with every header it carries in one go.

    No HTML body: browsers follow `Location`, and the linking URL then appears once, not twice. The URL is an absolute
    https URL on an allowed host (checked when it came from Ayrshare), so the IRI conversion and header copy Werkzeug
    makes for every response just before sending it are skipped unless the URL is not plain ASCII.
    """

    default_mimetype = None  # no body, so no Content-Type
    security_headers_complete = True  # web_security.security_headers has nothing to add
    HEADERS = [*NO_STORE_HEADERS.items(), *headers_for_non_html(), ("Content-Length", "0")]

    def __init__(self, url: str):
        if "\n" in url or "\r" in url:  # the one value from outside: what Werkzeug's check refuses, a line break
            raise ValueError("Header values must not contain newline characters.")
        super().__init__(status=302, headers=_PrecheckedHeaders([("Location", url), *self.HEADERS]))
        self._ascii_location = url.isascii()

    def get_wsgi_headers(self, environ) -> Headers:
        return self.headers if self._ascii_location else super().get_wsgi_headers(environ)


bp = Blueprint("connect", __name__)


@bp.get("/connect/<user>")
def connect(user: str) -> Response:
    # Each use of a context proxy is a context-variable lookup: on the cache-hit path they are taken out once.
    req, state = request._get_current_object(), g._get_current_object()
    service: ConnectService = current_app.extensions["connect"]
    timings = Timings()
    try:
        caller, link = service.link_for(user, PresentedCredentials.from_request(req), req.args, timings)
    finally:
        state.upstream_seconds = timings.upstream_seconds
    state.user = user
    state.auth = caller.kind
    state.cache_outcome = link.source
    return link_response(link, req)


def link_response(link: Link, req: Request) -> Response:
    if wants_json(req):
        expires = datetime.fromtimestamp(link.expires_at, UTC).isoformat().replace("+00:00", "Z")
        response = jsonify(url=link.url, expiresAt=expires, cached=link.cached)
        response.headers.update(NO_STORE_HEADERS)
        return response
    return LinkRedirect(link.url)
