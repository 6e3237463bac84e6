"""The values that cross the boundary with Ayrshare: what a link request asks for (`LinkOptions`) and what comes back
(`Link`, whose `expires_at` is the verified expiry, never what we asked for), and a User Profile's creation and linked
accounts (`CreatedProfile`, `LinkedAccounts`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

DEFAULT_EXPIRES_IN_MINUTES = 5  # both flows, when `expiresIn` is not sent
# The platforms Ayrshare's "Unlink a Social Network" page allows (pinterest and snapchat are not among them).
UNLINKABLE_NETWORKS = frozenset(
    {
        "bluesky",
        "facebook",
        "gmb",
        "instagram",
        "linkedin",
        "reddit",
        "telegram",
        "threads",
        "tiktok",
        "twitter",
        "youtube",
    }
)


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

    def lifetime_minutes(self) -> int:
        """What the link is asked to live for: `expiresIn`, or Ayrshare's documented default of 5 minutes."""
        return self.expires_in or DEFAULT_EXPIRES_IN_MINUTES

    def fingerprint(self) -> str:
        return json.dumps([sorted(self.allowed_social), self.redirect, self.expires_in], separators=(",", ":"))


@dataclass(frozen=True)
class Link:
    """A linking URL, when it expires, and how this request got it."""

    url: str = field(repr=False)  # a secret: never log it
    expires_at: float  # Unix seconds, from the verified answer
    source: str = "upstream"  # upstream | cache | shared | stale | direct
    session_id: str | None = field(default=None, repr=False)  # the Link Session's id (session flow only)

    @property
    def cached(self) -> bool:
        return self.source not in ("upstream", "direct")

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


@dataclass(frozen=True)
class CreatedProfile:
    """A User Profile Ayrshare just created. The key is returned only this once: store it before anything else."""

    profile_key: str = field(repr=False)  # a secret: never log it
    ref_id: str
    title: str


@dataclass(frozen=True)
class LinkedAccounts:
    """The networks a User Profile has linked, sorted."""

    networks: tuple[str, ...] = ()
