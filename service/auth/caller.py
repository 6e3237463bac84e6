"""What a request presents (`PresentedCredentials`, lifted out of Flask) and who it turns out to be (`Caller`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    """Who is asking, and which user's link it may open."""

    kind: str  # "internal" | "signed" | "jwt" | "header" | "open"
    user: str | None  # whose links this caller may open; None means any user


@dataclass(frozen=True)
class PresentedCredentials:
    """What a request carried, lifted out of Flask so the checks are plain functions."""

    authorization: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    peer: str | None = None  # the TCP peer's address, before any X-Forwarded-For rewriting

    @classmethod
    def from_request(cls, request) -> PresentedCredentials:
        environ = request.environ
        # ProxyFix (TRUSTED_PROXY_COUNT) rewrites REMOTE_ADDR from X-Forwarded-For and keeps the socket's address here.
        peer = environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR", environ.get("REMOTE_ADDR"))
        return cls(
            authorization=request.headers.get("Authorization"),
            query=request.args,
            cookies=request.cookies,
            headers=request.headers,
            peer=peer,
        )
