"""The options sent with generateJWT (`allowedSocial`, `redirect`, `expiresIn`) for one request.

Configured defaults apply to every link; the query may narrow them. Everything from the query is hostile input and
is validated here before it can reach Ayrshare or a cache key:

- `redirect` (the "Done" target on Ayrshare's page): `is_allowed_redirect()` accepts only
  `https://<host>[:port][/path][?query][#fragment]` in printable ASCII, without userinfo or backslashes, whose
  (scheme, host, port) is on `REDIRECT_ALLOWED_HOSTS`. `http://` is accepted only for an origin listed with `http://`
  (loopback hosts only, see `RedirectAllowlist.parse`). The URL is forwarded byte for byte, so `origin=true` survives.
  The configured default (`AYRSHARE_REDIRECT`) is trusted as configured; it was checked at start.
- `allowedSocial`: comma-separated (or repeated) network names; each must be one Ayrshare supports, and the result is
  narrowed to `AYRSHARE_ALLOWED_SOCIAL` when that is set.

Any violation is a 400 raised before the profile lookup's result is used, so nothing reaches Ayrshare.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BadRequest
from .links import LinkOptions
from .settings_schema import SUPPORTED_NETWORKS

if TYPE_CHECKING:
    from .settings import Settings

MAX_REDIRECT_LENGTH = 2048
MAX_ALLOWED_SOCIAL_LENGTH = 256
SUPPORTED_NETWORKS_HINT = "names such as facebook, instagram, linkedin, tiktok, twitter, youtube"

_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# scheme://host[:port] then nothing, or a path/query/fragment of printable ASCII minus backslash.
_REDIRECT = re.compile(r"(https?)://([^/?#:@\\]{1,253})(?::([0-9]{1,5}))?(?:[/?#][!-\[\]-~]*)?", re.ASCII)
_DEFAULT_PORTS = {"https": 443, "http": 80}
_ORIGIN_ENTRY = re.compile(r"https?://[^/?#@\\]+/?")


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


@functools.lru_cache(maxsize=8)
def _allowlist_for(entries: tuple[str, ...]) -> RedirectAllowlist:
    return RedirectAllowlist.parse(entries)


def _origin_of(url: str) -> tuple[str, str, int] | None:
    match = _REDIRECT.fullmatch(url)
    if not match:
        return None
    scheme, host, port = match.group(1), match.group(2).lower(), match.group(3)
    port_number = int(port) if port else _DEFAULT_PORTS[scheme]
    if not _HOST.fullmatch(host) or len(host) > 253 or not 0 < port_number < 65536:
        return None
    return scheme, host, port_number


def is_allowed_redirect(url: str, allowlist: RedirectAllowlist) -> bool:
    """The one rule for where Ayrshare's "Done" button may send a user. Strict shape first, then the allowlist."""
    origin = _origin_of(url) if len(url) <= MAX_REDIRECT_LENGTH else None
    if origin is None:
        return False
    if origin in allowlist.origins:
        return True
    scheme, host, port = origin
    return (scheme, port) == ("https", 443) and any(host == s[1:] or host.endswith(s) for s in allowlist.suffixes)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_trusted_default_redirect(url: str) -> bool:
    """The configured default: https anywhere, or http on a loopback host (the `make run` demo's /done page)."""
    origin = _origin_of(url)
    return origin is not None and (origin[0] == "https" or is_loopback(origin[1]))


def resolve_allowed_social(requested: str | None, supported: frozenset[str], configured: Iterable[str]) -> tuple:
    """Validate the query's networks and narrow them to the configured allowlist (empty = every supported one)."""
    configured = tuple(sorted(configured))
    if requested is None:
        return configured
    if len(requested) > MAX_ALLOWED_SOCIAL_LENGTH:
        raise BadRequest("'allowedSocial' is too long.", code="bad_allowed_social")
    names = {name.strip().lower() for name in requested.split(",") if name.strip()}
    unknown = sorted(name for name in names if name not in supported)
    if not names or unknown:
        raise BadRequest(
            "'allowedSocial' must be a comma-separated list of network names Ayrshare supports "
            f"({SUPPORTED_NETWORKS_HINT}).",
            code="bad_allowed_social",
        )
    narrowed = tuple(sorted(names & set(configured))) if configured else tuple(sorted(names))
    if not narrowed:
        raise BadRequest(
            "None of the networks in 'allowedSocial' is enabled for this service (AYRSHARE_ALLOWED_SOCIAL).",
            code="bad_allowed_social",
        )
    return narrowed


def _query_value(query: Mapping[str, str], name: str) -> str | None:
    """A parameter's value; repeated parameters are joined with commas (allowedSocial) or refused (redirect)."""
    values = query.getlist(name) if hasattr(query, "getlist") else ([query[name]] if name in query else [])
    if not values:
        return None
    if len(values) > 1 and name == "redirect":
        raise BadRequest("Give 'redirect' at most once.", code="bad_redirect")
    return ",".join(values)


def resolve_options(
    query: Mapping[str, str], settings: Settings, allowlist: RedirectAllowlist | None = None
) -> LinkOptions:
    allowlist = allowlist if allowlist is not None else _allowlist_for(tuple(settings.redirect_allowed_hosts))
    redirect = settings.default_redirect
    requested_redirect = _query_value(query, "redirect")
    if requested_redirect is not None:
        if not is_allowed_redirect(requested_redirect, allowlist):
            raise BadRequest(
                "'redirect' must be an https URL on a host listed in REDIRECT_ALLOWED_HOSTS.", code="bad_redirect"
            )
        redirect = requested_redirect
    allowed_social = resolve_allowed_social(
        _query_value(query, "allowedSocial"), SUPPORTED_NETWORKS, settings.default_allowed_social
    )
    return LinkOptions(allowed_social=allowed_social, redirect=redirect, expires_in=settings.expires_in_minutes)
