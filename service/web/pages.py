"""The service's browser pages: `/done`, which ends a linking popup, `/demo` (demo mode only) and `/favicon.ico`.

`/done` tells the page that opened the popup "linked" with `postMessage`, only to `FRONTEND_ORIGINS` and the service's
own origin, or sends a same-tab user back to an allowed `?return=` URL. All script lives in static files, so the
pages work under a strict `script-src 'self'` policy.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit, urlunsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for

from ..auth import signed_path
from ..config import Settings
from ..urls import web_origin
from .errors import NO_STORE_HEADERS

bp = Blueprint("frontend", __name__)

# The fragment the done page adds when it sends a same-tab user back; connect.js's resumeSameTab() reads it.
LINKED_FRAGMENT = "ayrshare-connect=linked"
DEMO_LINK_TTL_SECONDS = 600
# Not in any directory: picking it shows the service's 404 page, or, with PROFILE_AUTO_CREATE, makes their profile.
DEMO_UNKNOWN_USER = "nobody"
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


def demo_failing_links(settings: Settings, users: list[str], ttl_seconds: int) -> list[tuple[str, str, str]]:
    """`(value, label, link)` for links that fail the signature check, so the demo can show those pages too: one
    that expired a minute ago, and one signed for the first user but used for the second (the wrong-user page)."""
    if not signs_links(settings) or not users:
        return []
    first = users[0]
    expired = signed_path(first, settings.signing_secret, ttl_seconds, now=time.time() - ttl_seconds - 60)
    links = [(f"expired:{first}", f"{first}: a link that has expired", expired)]
    if len(users) > 1:
        second = users[1]
        query = signed_path(first, settings.signing_secret, ttl_seconds).partition("?")[2]
        links.append(
            (
                f"wrong-user:{second}",
                f"{second}: a link signed for {first}",
                f"/connect/{quote(second, safe='')}?{query}",
            )
        )
    return links


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


@bp.app_context_processor
def _page_context() -> dict:
    # The error page reports failures to the opener with the same origin rule as the done page.
    return {"notify_origins": " ".join(_settings().frontend_origins)}


@bp.after_app_request
def _share_connect_module(response: Response) -> Response:
    """Frontends on other origins may `import … from "<service>/static/connect.js"`; module scripts need CORS."""
    if request.endpoint == "static" and (request.view_args or {}).get("filename") == "connect.js":
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on pages that name no icon (a JSON answer opened in a tab): the pages' SVG."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


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
        failing=demo_failing_links(settings, users, ttl),
        signed=signs_links(settings),
        auto_create=settings.profile_auto_create,
        ttl=ttl,
    )
    return Response(html, mimetype="text/html", headers=NO_STORE_HEADERS)
