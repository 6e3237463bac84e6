"""What each fault knob does to a generateJWT or Link Sessions exchange.

Transport faults replace the whole answer (they model a broken upstream or network); token faults tamper
with an otherwise valid success (they model a buggy or hostile upstream). See knobs.py for the names.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass

from flask import Response, jsonify, request

from emulator.errors import ACTION
from emulator.serving import SOCKET_ENVIRON_KEY

HANG_SECONDS = 120
FOREIGN_LINK_BASE = "https://evil.example/"
# How far ahead `long_expiry` puts a link's expiry: ten years (3652 days, leap days included).
LONG_EXPIRY_SECONDS = 3652 * 24 * 3600

_GATEWAY_PAGE = "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"


def transport_fault_response(fault: str, rate_limit_max: int, action: str = ACTION) -> Response:
    """The answer for a transport fault; "drop" returns after closing the socket so nothing is sent."""
    if fault == "429":
        response = jsonify(
            {"action": action, "status": "error", "code": 429, "message": "Rate limit exceeded (injected)."}
        )
        response.status_code = 429
        # A real 429 reports a full window; still no Retry-After, as the vendor documents none.
        response.headers["x-ratelimit-max"] = str(rate_limit_max)
        response.headers["x-ratelimit-count"] = str(rate_limit_max)
        return response
    if fault == "500":
        response = jsonify({"action": action, "status": "error", "code": 500, "message": "Internal error (injected)."})
        response.status_code = 500
        return response
    if fault in ("502", "503"):
        # Gateways in front of an API answer with HTML, not the API's JSON shape; clients must cope.
        status = {"502": "502 Bad Gateway", "503": "503 Service Unavailable"}[fault]
        return Response(_GATEWAY_PAGE.format(status=status), status=int(fault), mimetype="text/html")
    if fault == "malformed":
        # Declared JSON but cut off mid-document, as when a connection is truncated by a proxy.
        return Response('{"status": "success", "title": "User Prof', status=200, mimetype="application/json")
    if fault == "non_json":
        return Response("<html><body>Maintenance</body></html>", status=200, mimetype="text/html")
    if fault == "hang":
        # For client timeout tests: this connection's greenlet sleeps (patched `time.sleep`); others proceed.
        time.sleep(HANG_SECONDS)
        return Response(_GATEWAY_PAGE.format(status="504 Gateway Timeout"), status=504, mimetype="text/html")
    if fault == "drop":
        return _drop_connection()
    if fault == "echo":
        # A refusal that echoes the request (some APIs put the offending field in the message) with a code that is
        # not a number: clients must copy neither into their own errors or logs.
        body = request.get_json(silent=True) or {}
        echoed = f"{body.get('privateKey')} {request.headers.get('Authorization')}"
        response = jsonify({"action": action, "status": "error", "code": {"echo": echoed}, "message": echoed})
        response.status_code = 400
        return response
    raise ValueError(f"not a transport fault: {fault}")


def _drop_connection() -> Response:
    # The server exposes the client socket; shutting it down makes the client see a closed connection with no status
    # line. The server then fails to write the empty response and treats it as a dropped client.
    sock = request.environ.get(SOCKET_ENVIRON_KEY)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the client: nothing left to drop
            sock.shutdown(socket.SHUT_RDWR)
    return Response(b"", status=200)


@dataclass(frozen=True)
class SuccessTampering:
    """How a token fault changes the success answer; the default instance changes nothing."""

    use_foreign_key: bool = False
    already_expired: bool = False
    long_expiry: bool = False
    link_base: str | None = None
    drop_field: str | None = None  # "url" or "token" (a Link Session's token field is its sessionId)


def tampering_for(fault: str | None) -> SuccessTampering:
    """Translate a token-fault name (or None) into concrete changes to the success answer."""
    if fault is None:
        return SuccessTampering()
    if fault == "unsigned":
        return SuccessTampering(use_foreign_key=True)
    if fault == "expired":
        return SuccessTampering(already_expired=True)
    if fault == "long_expiry":
        return SuccessTampering(long_expiry=True)
    if fault == "foreign_host":
        return SuccessTampering(link_base=FOREIGN_LINK_BASE)
    if fault == "missing_url":
        return SuccessTampering(drop_field="url")
    if fault == "missing_token":
        return SuccessTampering(drop_field="token")
    raise ValueError(f"not a token fault: {fault}")
