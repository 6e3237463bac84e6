"""Signed links: `/connect/<user>?expires=&signature=`, `signature = hex(HMAC-SHA256(secret, message))`.

The message is `"<user>:<expires>"`, followed by one `\\n<name>=<value>` line for each of `allowedSocial` and
`redirect` the link carries (in that order), so the options cannot be added or changed after signing. The team's
backend signs (`signed_path`, or the recipe in the README); `check_signature` verifies in constant time.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from ..errors import Forbidden, Unauthenticated
from .caller import Caller

# The query options a signature covers when present, in the order they appear in the signed message.
SIGNED_OPTIONS = ("allowedSocial", "redirect")


def signed_message(user: str, expires: int, options: Mapping[str, str] | None = None) -> str:
    """The text that is signed: `<user>:<expires>`, plus `\\nname=value` for each option given."""
    lines = [f"{user}:{expires}"]
    lines += [f"{name}={options[name]}" for name in SIGNED_OPTIONS if options and options.get(name) is not None]
    return "\n".join(lines)


def sign(user: str, expires: int, secret: str, options: Mapping[str, str] | None = None) -> str:
    return hmac.digest(secret.encode(), signed_message(user, expires, options).encode(), "sha256").hex()


def signed_path(
    user: str,
    secret: str,
    ttl_seconds: int = 300,
    now: float | None = None,
    options: Mapping[str, str] | None = None,
) -> str:
    """The path the team's backend hands to its frontend: `/connect/<user>?expires=...&signature=...[&options]`."""
    expires = int(now if now is not None else time.time()) + ttl_seconds
    given = {name: options[name] for name in SIGNED_OPTIONS if options and options.get(name) is not None}
    query = urlencode({"expires": expires, "signature": sign(user, expires, secret, given), **given})
    return f"/connect/{quote(user, safe='')}?{query}"


def presented_options(query: Mapping[str, str]) -> dict[str, str]:
    """The signed options as the request carries them; a repeated one is joined with commas, as the options are."""
    options = {}
    for name in SIGNED_OPTIONS:
        values = query.getlist(name) if hasattr(query, "getlist") else ([query[name]] if name in query else [])
        if values:
            options[name] = ",".join(values)
    return options


def breaks_lines(options: Mapping[str, str | None]) -> bool:
    """True when an option's value holds a line break, which could pass one option off as another in the message."""
    return any("\n" in value or "\r" in value for value in options.values() if value)


def check_signature(user: str, query: Mapping[str, str], secret: str, max_ttl: int, now: float) -> Caller | None:
    expires_raw, signature = query.get("expires"), query.get("signature")
    if expires_raw is None and signature is None:
        return None
    if not expires_raw or not signature:
        raise Unauthenticated("A signed link needs both 'expires' and 'signature'.", code="bad_signature")
    if not (expires_raw.isascii() and expires_raw.isdigit() and len(expires_raw) <= 12):
        raise Forbidden("'expires' must be a Unix time in seconds.", code="bad_signature")
    expires = int(expires_raw)
    options = presented_options(query)
    # Compare before looking at the time, so a forged link never learns whether its expiry would have passed.
    expected = sign(user, expires, secret, options)
    matches = hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace"))
    if options and (not matches or breaks_lines(options)):
        raise Forbidden(
            "The link's signature does not cover these 'allowedSocial'/'redirect' values: the backend must sign "
            "the options it puts in the link.",
            code="options_not_signed",
        )
    if not matches:
        raise Forbidden("The link's signature is not valid for this user.", code="bad_signature")
    if expires <= now:
        raise Forbidden("This link has expired. Go back and click Connect again.", code="link_expired")
    if expires > now + max_ttl:
        raise Forbidden("This link is valid for too long; sign links for a shorter time.", code="bad_signature")
    return Caller(kind="signed", user=user)
