"""Linking URLs: the `Link` value, what besides the profile changes the URL (`LinkOptions`), and cache keys.

Freshness comes from the token's verified `exp`, not from what we asked for: `Link.expires_at` is that `exp`.
Getting a link (the cache, single-flight, stale-if-error) is `LinkBroker`'s job, in service/broker.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field

KEY_PREFIX = "connect:link:v1:"


@dataclass(frozen=True)
class LinkOptions:
    """Everything besides the profile that changes the URL Ayrshare returns."""

    allowed_social: tuple[str, ...] = ()
    redirect: str | None = None
    expires_in: int | None = None  # minutes, 1-2880

    def as_request_fields(self) -> dict:
        fields: dict = {}
        if self.allowed_social:
            fields["allowedSocial"] = list(self.allowed_social)
        if self.redirect:
            fields["redirect"] = self.redirect
        if self.expires_in is not None:
            fields["expiresIn"] = self.expires_in
        return fields

    def fingerprint(self) -> str:
        return json.dumps(
            [sorted(self.allowed_social), self.redirect, self.expires_in],
            separators=(",", ":"),
            sort_keys=True,
        )


@dataclass(frozen=True)
class Link:
    url: str = field(repr=False)  # carries the API key inside its JWT: never log it
    expires_at: float  # Unix seconds, from the verified token
    source: str = "upstream"  # upstream | cache | shared | stale | direct

    @property
    def cached(self) -> bool:
        return self.source not in ("upstream", "direct")

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


@functools.lru_cache(maxsize=4096)  # the same user and options come back on every click; the hash is worth keeping
def cache_key(credential_fingerprint: str, domain: str, profile_key: str, options: LinkOptions) -> str:
    """Covers everything that changes the URL; hashed so no profile key or secret appears in Redis in clear."""
    material = "\0".join([credential_fingerprint, domain, profile_key, options.fingerprint()])
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()
