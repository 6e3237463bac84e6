"""The service's browser pages: the "done" page that ends a linking popup, and the demo page (demo mode only).

`/done` is the `redirect` target handed to Ayrshare. Opened in the linking popup, it tells the page that opened the
popup "linked" with `postMessage` — only to the origins in `FRONTEND_ORIGINS` plus the service's own origin, and the
receiving `connect.js` checks `event.origin` and `event.source` in turn — then closes the popup. Opened in a tab with
no opener (the popup was blocked, or the redirect carries `origin=true` so Ayrshare's page sent the opener here), it
sends the user back to `?return=<url>` when that URL belongs to an allowed origin, else says the tab can be closed.

`/demo` walks the whole flow against the emulator. It renders the links the way a team's backend would: signed
(`/connect/<user>?expires=…&signature=…`) when `CONNECT_AUTH` includes `signed`, plain `/connect/<user>` otherwise.

All script lives in static files and data travels in `data-` attributes, so the pages work under a strict
`script-src 'self'` Content-Security-Policy.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from flask import Blueprint, Response, abort, current_app, render_template, request

from .callers import signed_path
from .errors import NO_STORE_HEADERS
from .origins import web_origin
from .settings import Settings

bp = Blueprint("frontend", __name__)

# The fragment the done page adds when it sends a same-tab user back; connect.js's resumeSameTab() reads it.
LINKED_FRAGMENT = "ayrshare-connect=linked"
DEMO_LINK_TTL_SECONDS = 600
DEMO_UNKNOWN_USER = "nobody"  # not in any directory: picking it shows the service's 404 page
DEMO_MAX_USERS = 50


def safe_return_url(value: str | None, allowed_origins: tuple[str, ...]) -> str | None:
    """Where the done page may send a user who has no popup opener, or None.

    Allowed: an absolute http(s) URL whose origin is exactly one of `allowed_origins`. Anything else — other hosts,
    relative and scheme-relative URLs, backslashes, credentials, control characters, other schemes — is refused, so
    `/done?return=` cannot be used as an open redirect. The answer carries the fragment connect.js looks for.
    """
    if not value or len(value) > 2048 or web_origin(value) not in allowed_origins:
        return None
    parts = urlsplit(value)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, LINKED_FRAGMENT))


def signs_links(settings: Settings) -> bool:
    """Whether a team's backend would sign its `/connect` links for this service (the `signed` mode with a secret)."""
    return "signed" in settings.connect_auth and bool(settings.signing_secret)


def demo_links(settings: Settings, users: list[str], ttl_seconds: int) -> list[tuple[str, str]]:
    """`(user, link)` pairs as a team's backend would render them: signed when the service checks signatures."""
    if signs_links(settings):
        return [(user, signed_path(user, settings.signing_secret, ttl_seconds)) for user in users]
    return [(user, f"/connect/{quote(user, safe='')}") for user in users]


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


@bp.app_context_processor
def _page_context() -> dict:
    # The error page reports failures to the opener with the same origin rule as the done page.
    return {"notify_origins": " ".join(_settings().frontend_origins)}


@bp.record_once
def _share_connect_module(state) -> None:
    """Frontends on other origins may `import … from "<service>/static/connect.js"`; module scripts need CORS.

    Added around the app's static view rather than in an after-request hook, which would run on every request.
    """
    serve_static = state.app.view_functions["static"]

    def static(filename: str) -> Response:
        response = serve_static(filename=filename)
        if filename == "connect.js":
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    state.app.view_functions["static"] = static


@bp.get("/done")
def done() -> Response:
    settings = _settings()
    return_to = safe_return_url(request.args.get("return"), settings.frontend_origins)
    if return_to is None and settings.demo and "return" not in request.args:
        return_to = f"/demo#{LINKED_FRAGMENT}"  # the demo page is the app in demo mode
    html = render_template(
        "done.html",
        return_to=return_to or "",
        redirect_opener="true" if request.args.get("origin") == "true" else "false",
    )
    return Response(html, mimetype="text/html", headers=NO_STORE_HEADERS)


@bp.get("/demo")
def demo() -> Response:
    settings = _settings()
    if not settings.demo:
        abort(404)
    ttl = request.args.get("link_ttl", type=int) or DEMO_LINK_TTL_SECONDS
    ttl = max(1, min(ttl, settings.signed_link_max_ttl))
    directory = current_app.extensions["connect"].profiles
    users = directory.users()[:DEMO_MAX_USERS]
    html = render_template(
        "demo.html",
        links=demo_links(settings, users, ttl),
        unknown=demo_links(settings, [DEMO_UNKNOWN_USER], ttl)[0],
        signed=signs_links(settings),
        ttl=ttl,
    )
    return Response(html, mimetype="text/html", headers=NO_STORE_HEADERS)
