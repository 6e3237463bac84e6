"""Signed links: `/connect/<user>?expires=&signature=`, with `signature = hex(HMAC-SHA256(secret, "<user>:<expires>"))`.

The team's backend signs (`signed_path`, or the recipe in the README); `check_signature` verifies in constant time.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from ..errors import Forbidden, Unauthenticated
from .caller import Caller


def sign(user: str, expires: int, secret: str) -> str:
    return hmac.digest(secret.encode(), f"{user}:{expires}".encode(), "sha256").hex()


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
