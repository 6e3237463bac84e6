"""The URL rules every part of the service shares: web origins, loopback hosts, and where a user may be redirected.

`web_origin` normalises `scheme://host[:port]` for origin comparisons (frontends, CORS, linking hosts);
`is_allowed_redirect` is the one rule for the `redirect` sent to Ayrshare, checked against `REDIRECT_ALLOWED_HOSTS`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_REDIRECT_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Control characters (DEL too), space and backslash: shapes a browser may read differently from urlsplit.
_UNSAFE_CHARACTER = re.compile(r"[\x00-\x20\x7f\\]")
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# scheme://host[:port] then nothing, or a path/query/fragment of printable ASCII minus backslash.
_REDIRECT = re.compile(r"(https?)://([^/?#:@\\]{1,253})(?::([0-9]{1,5}))?(?:[/?#][!-\[\]-~]*)?", re.ASCII)
_ORIGIN_ENTRY = re.compile(r"https?://[^/?#@\\]+/?")


def web_origin(url: str) -> str | None:
    """The normalised origin of an absolute http(s) URL (lower-case host, default port omitted), or None for
    anything else: relative or scheme-relative URLs, other schemes, credentials, malformed ports, wildcards."""
    # ASCII only: lower-casing maps some non-ASCII letters onto ASCII ones (the Kelvin sign onto "k").
    if not url or not url.isascii() or "*" in url or _UNSAFE_CHARACTER.search(url):
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
    if origin is None:
        return False
    with_port = f"{origin}:{_DEFAULT_PORTS[origin.partition(':')[0]]}"
    return value.rstrip("/").lower() in (origin, with_port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RedirectAllowlist:
    """`REDIRECT_ALLOWED_HOSTS`: `host` / `host:port` (https), `.example.com` (it and its subdomains, https, port 443),
    and `http://loopback:port` (plain http, for a local demo only)."""

    origins: frozenset[tuple[str, str, int]] = frozenset()
    suffixes: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> RedirectAllowlist:
        """Raises ValueError naming the bad entry's position (never its value, like every configuration error)."""
        origins, suffixes = set(), set()
        for position, entry in enumerate(entries, start=1):
            entry = entry.strip().lower()
            if entry.startswith(".") and _HOST.fullmatch(entry[1:]) and "." in entry[1:]:
                suffixes.add(entry)
                continue
            url = entry if "://" in entry else f"https://{entry}"
            origin = _origin_of(url) if _ORIGIN_ENTRY.fullmatch(url) else None
            if origin is None:
                raise ValueError(f"entry {position} is not a host, host:port, .domain or http://loopback:port")
            if origin[0] == "http" and not is_loopback(origin[1]):
                raise ValueError(f"entry {position}: plain http is only allowed for loopback hosts")
            origins.add(origin)
        return cls(frozenset(origins), frozenset(suffixes))

    def __bool__(self) -> bool:
        return bool(self.origins or self.suffixes)


def _origin_of(url: str) -> tuple[str, str, int] | None:
    match = _REDIRECT.fullmatch(url) if url.isascii() else None  # see web_origin
    if not match:
        return None
    scheme, host, port = match.group(1), match.group(2).lower(), match.group(3)
    port_number = int(port) if port else _DEFAULT_PORTS[scheme]
    if not _HOST.fullmatch(host) or len(host) > 253 or not 0 < port_number < 65536:
        return None
    return scheme, host, port_number


def is_allowed_redirect(url: str, allowlist: RedirectAllowlist) -> bool:
    """Where Ayrshare's "Done" button may send a user: `https://<host>[:port][/path][?query][#fragment]` in printable
    ASCII, without userinfo or backslashes, whose (scheme, host, port) is on the allowlist."""
    origin = _origin_of(url) if len(url) <= MAX_REDIRECT_LENGTH else None
    if origin is None:
        return False
    if origin in allowlist.origins:
        return True
    scheme, host, port = origin
    return (scheme, port) == ("https", 443) and any(host == s[1:] or host.endswith(s) for s in allowlist.suffixes)


def is_trusted_default_redirect(url: str) -> bool:
    """The configured default: https anywhere, or http on a loopback host (the `make run` demo's /done page)."""
    origin = _origin_of(url)
    return origin is not None and (origin[0] == "https" or is_loopback(origin[1]))
