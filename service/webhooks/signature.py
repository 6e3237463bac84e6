"""Ayrshare's webhook signature: HMAC-SHA256 of the raw body under the webhook secret, in
`X-Authorization-Content-SHA256`, with the sending time in `X-Authorization-Timestamp` (Unix seconds).

Every secret in `AYRSHARE_WEBHOOK_SECRET` is tried, so a rotated secret and its predecessor both verify during the
vendor's grace window; during that window a delivery may also carry the new secret's signature in a second header.
The HMAC does not cover the timestamp, so a captured body can be replayed with a fresh one (docs/webhooks.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Mapping

SIGNATURE_HEADERS = ("X-Authorization-Content-SHA256", "X-Authorization-Content-SHA256-V2")
TIMESTAMP_HEADER = "X-Authorization-Timestamp"


class BadSignature(Exception):
    """Why a delivery is refused (401): `reason` is a fixed slug, never anything the sender wrote."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def verify(body: bytes, headers: Mapping[str, str], secrets: tuple[str, ...], tolerance: float, now=None) -> float:
    """The delivery's timestamp when one secret signed `body` and the timestamp is within `tolerance`, else
    `BadSignature`."""
    stamp = headers.get(TIMESTAMP_HEADER, "").strip()
    if not stamp:
        raise BadSignature("missing_timestamp")
    try:
        sent_at = float(stamp)
    except ValueError:
        raise BadSignature("bad_timestamp") from None
    if not math.isfinite(sent_at):  # "nan" would pass any distance check
        raise BadSignature("bad_timestamp")
    if sent_at > 1e11:  # milliseconds, as some Ayrshare timestamps are
        sent_at /= 1000
    if abs((now if now is not None else time.time()) - sent_at) > tolerance:
        raise BadSignature("stale_timestamp")
    offered = [_digest_bytes(headers.get(name, "")) for name in SIGNATURE_HEADERS]
    offered = [value for value in offered if value]
    if not offered:
        raise BadSignature("missing_signature")
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, value) for value in offered):
            return sent_at
    raise BadSignature("bad_signature")


def _digest_bytes(value: str) -> bytes | None:
    """The 32 bytes of a hex (either case) or base64 digest; None for anything else."""
    value = value.strip()
    if len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == 32 else None
