"""The options of one link request (`allowedSocial`, `redirect`, `expiresIn`), from the query and the defaults.

Configured defaults apply to every link; the query may narrow them. Everything from the query is hostile input and is
validated here (a 400 naming the parameter) before it can reach Ayrshare or a cache key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..config import SUPPORTED_NETWORKS, Settings
from ..errors import BadRequest
from ..upstream import LinkOptions
from ..urls import RedirectAllowlist, is_allowed_redirect

MAX_ALLOWED_SOCIAL_LENGTH = 256
SUPPORTED_NETWORKS_HINT = "names such as facebook, instagram, linkedin, tiktok, twitter, youtube"


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
    """The options for this request; `allowlist` defaults to the parsed `REDIRECT_ALLOWED_HOSTS`."""
    allowlist = allowlist if allowlist is not None else RedirectAllowlist.parse(settings.redirect_allowed_hosts)
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
