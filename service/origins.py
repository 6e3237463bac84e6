"""Web origins (`scheme://host[:port]`): the one parser behind every origin comparison the service makes.

Used for the frontend origins the done page reports to, the CORS allowlist, the done page's same-tab return URL, and
the linking hosts a URL from Ayrshare may point at. (Redirects passed to Ayrshare go through the stricter validator
in `options.py`, written against the open-redirect corpus.)
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Control characters, space and backslash: shapes a browser may read differently from urlsplit.
_UNSAFE_CHARACTER = re.compile(r"[\x00-\x20\\]")


def web_origin(url: str) -> str | None:
    """The normalised origin of an absolute http(s) URL (lower-case host, default port omitted), or None for
    anything else: relative or scheme-relative URLs, other schemes, credentials, malformed ports, wildcards."""
    if not url or "*" in url or _UNSAFE_CHARACTER.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, _DEFAULT_PORTS[parts.scheme]) else "")


def is_bare_origin(value: str) -> bool:
    """`scheme://host[:port]` and nothing more (a trailing slash tolerated): what settings that list origins take."""
    origin = web_origin(value)
    return origin is not None and value.rstrip("/").lower() in (origin, _with_default_port(origin))


def _with_default_port(origin: str) -> str:
    scheme = origin.partition(":")[0]
    return f"{origin}:{_DEFAULT_PORTS[scheme]}"
