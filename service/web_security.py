"""Headers that protect browsers: a strict Content-Security-Policy on HTML, nosniff and no framing everywhere, and
CORS for JSON callers on `/connect` from an explicit list of origins.

HTML pages (error pages, and any page another module adds) get `CSP_HTML` unless the page sets its own:
- scripts only from this origin (`script-src 'self'`: no inline script, no `eval`) — pages keep their JavaScript in
  `/static/*.js`, as service/templates/error.html does;
- styles only from this origin (`/static/pages.css`): no inline `<style>` or `style=` attributes either;
- no plugins, no `<base>` rewriting, forms post only here, and `frame-ancestors 'none'` (with `X-Frame-Options:
  DENY` for old browsers): social networks refuse to be framed anyway, and a framed Connect page could be clickjacked.
Every response gets `X-Content-Type-Options: nosniff`, and non-HTML responses a `default-src 'none'` policy so a
JSON body opened directly can never run as a document.

CORS (`CORS_ALLOWED_ORIGINS`): a request whose `Origin` is exactly on the list gets that origin echoed back with
`Access-Control-Allow-Credentials: true` (the JWT cookie mode needs credentials) and `Vary: Origin`; any other origin
gets no CORS headers, so the browser withholds the answer. A wildcard is refused at start: `*` with credentials would
hand any site on the internet a logged-in user's linking URL.
"""

from __future__ import annotations

from flask import Flask, Response, request

from .settings import Settings

CSP_HTML = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
CSP_OTHER = "default-src 'none'; frame-ancestors 'none'"
CORS_PATH_PREFIX = "/connect/"
CORS_ALLOWED_HEADERS = "Authorization, Accept, X-Request-ID"
CORS_EXPOSED_HEADERS = "Retry-After, X-Request-ID"
CORS_MAX_AGE_SECONDS = "600"


def protective_headers(html: bool) -> list[tuple[str, str]]:
    """The headers every response carries: nosniff, no framing, and the policy for an HTML page or anything else."""
    policy = CSP_HTML if html else CSP_OTHER
    return [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Content-Security-Policy", policy)]


def headers_for_non_html() -> list[tuple[str, str]]:
    """The protective headers of a response that is not an HTML page (JSON, redirects)."""
    return protective_headers(html=False)


def security_headers(response: Response) -> Response:
    if getattr(response, "security_headers_complete", False):
        return response  # built with `headers_for_non_html()` already (the link redirect)
    headers = response.headers
    present = {name.lower() for name, _ in headers.items()}
    # Only what is missing: a page may bring a policy of its own.
    for name, value in protective_headers(html=response.mimetype == "text/html"):
        if name.lower() not in present:
            headers[name] = value
    return response


def cors_headers(response: Response, allowed_origins: frozenset[str]) -> Response:
    if not allowed_origins or not request.path.startswith(CORS_PATH_PREFIX):
        return response
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if origin is None or origin.lower() not in allowed_origins:
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE_SECONDS
    return response


def init_app(app: Flask, settings: Settings) -> None:
    allowed_origins = frozenset(settings.cors_allowed_origins)  # normalised by the settings loader

    @app.after_request
    def _protect(response: Response) -> Response:
        return security_headers(cors_headers(response, allowed_origins))
