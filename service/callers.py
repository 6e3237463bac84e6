"""Who is asking for whose link: signed links, the internal bearer token, and the demo-only open mode.

`Authenticator.identify(user, presented)` returns a `Caller` or raises `Unauthenticated` (401: no credential) or
`Forbidden` (403: a credential that is wrong, expired, or made for another user). It runs before anything else in
`/connect`, so a rejected request never costs an Ayrshare call.

Order of checks: the internal bearer token first (it may open any user's link), then each mode of `CONNECT_AUTH` in
the order configured. A mode that finds no credential of its kind passes to the next; one that finds a bad credential
refuses at once, so a forged signature never falls through to a weaker mode.

Signed links: `signature = hex(HMAC-SHA256(CONNECT_SIGNING_SECRET, "<user>:<expires>"))`, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from .errors import Forbidden, Unauthenticated
from .settings import Settings


@dataclass(frozen=True)
class Caller:
    kind: str  # "internal" | "signed" | "open"
    user: str | None  # whose links this caller may open; None means any user


@dataclass(frozen=True)
class PresentedCredentials:
    """What a request carried, lifted out of Flask so the checks are plain functions."""

    authorization: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)


def sign(user: str, expires: int, secret: str) -> str:
    message = f"{user}:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_path(user: str, secret: str, ttl_seconds: int = 300, now: float | None = None) -> str:
    """The path the team's backend hands to its frontend: `/connect/<user>?expires=...&signature=...`."""
    expires = int(now if now is not None else time.time()) + ttl_seconds
    query = urlencode({"expires": expires, "signature": sign(user, expires, secret)})
    return f"/connect/{quote(user, safe='')}?{query}"


def check_signature(user: str, query: Mapping[str, str], secret: str, max_ttl: int, now: float) -> Caller | None:
    expires_raw, signature = query.get("expires"), query.get("signature")
    if expires_raw is None and signature is None:
        return None
    if not expires_raw or not signature:
        raise Unauthenticated("A signed link needs both 'expires' and 'signature'.", code="bad_signature")
    if not (expires_raw.isascii() and expires_raw.isdigit() and len(expires_raw) <= 12):
        raise Forbidden("'expires' must be a Unix time in seconds.", code="bad_signature")
    expires = int(expires_raw)
    # Compare before looking at the time, so a forged link never learns whether its expiry would have passed.
    expected = sign(user, expires, secret)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace")):
        raise Forbidden("The link's signature is not valid for this user.", code="bad_signature")
    if expires <= now:
        raise Forbidden("This link has expired. Go back and click Connect again.", code="link_expired")
    if expires > now + max_ttl:
        raise Forbidden("This link is valid for too long; sign links for a shorter time.", code="bad_signature")
    return Caller(kind="signed", user=user)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authenticator:
    def __init__(self, settings: Settings):
        self.modes = settings.connect_auth
        self.signing_secret = settings.signing_secret
        self.max_ttl = settings.signed_link_max_ttl
        self._internal_token = (settings.internal_api_token or "").encode()

    def identify(self, user: str, presented: PresentedCredentials, now: float | None = None) -> Caller:
        now = time.time() if now is None else now
        token = bearer_token(presented.authorization)
        if token is not None and self._internal_token:
            if hmac.compare_digest(token.encode("utf-8", "replace"), self._internal_token):
                return Caller(kind="internal", user=None)
            raise Unauthenticated("The bearer token is not valid.", code="bad_token")
        for mode in self.modes:
            caller = self._try_mode(mode, user, presented, now)
            if caller is not None:
                return caller
        raise Unauthenticated()

    def _try_mode(self, mode: str, user: str, presented: PresentedCredentials, now: float) -> Caller | None:
        if mode == "signed":
            return check_signature(user, presented.query, self.signing_secret or "", self.max_ttl, now)
        if mode == "none":
            return Caller(kind="open", user=None)
        raise AssertionError(f"unhandled auth mode {mode}")  # settings validation makes this unreachable
