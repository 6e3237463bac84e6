"""Headers that protect browsers: a strict Content-Security-Policy on HTML pages (scripts and styles only from this
origin), nosniff and no framing everywhere, and CORS on `/connect` for exactly the origins in `CORS_ALLOWED_ORIGINS`
(credentials allowed, so never a wildcard).
"""

from __future__ import annotations

from flask import Flask, Response, request

from ..config import Settings
from ..urls import is_bare_origin, web_origin

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


def security_headers(response: Response) -> Response:
    # Only what is missing: a page may bring a policy of its own.
    for name, value in protective_headers(html=response.mimetype == "text/html"):
        response.headers.setdefault(name, value)
    return response


def cors_headers(response: Response, allowed_origins: frozenset[str]) -> Response:
    if not allowed_origins or not request.path.startswith(CORS_PATH_PREFIX):
        return response
    response.vary.add("Origin")
    raw = request.headers.get("Origin")
    # Compared and echoed in normalised form only: the answer names the configured origin, never the raw header.
    origin = web_origin(raw) if raw is not None and is_bare_origin(raw) else None
    if origin is None or origin not in allowed_origins:
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
