"""Who is asking for whose link: signed links, session JWTs, a trusted auth proxy, the internal bearer token, and the
demo-only open mode.

`Authenticator.identify(user, presented)` returns a `Caller` or raises `Unauthenticated` (401: no credential, or one
that cannot be verified) or `Forbidden` (403: a credential that is wrong, expired, or made for another user). It runs
before anything else in `/connect`, so a rejected request never costs an Ayrshare call. A `Caller` names the user it
may open (`None` = any user); `ConnectService` answers 403 when that is not `<user>`.

Order of checks (several `CONNECT_AUTH` modes may be enabled at once, e.g. `signed,jwt`):
1. `Authorization: Bearer <token>`, when the internal token or `jwt` mode is configured: the token must be
   `INTERNAL_API_TOKEN` (any user) or, with `jwt`, a valid session JWT. Any other bearer token is refused at once.
2. Each mode of `CONNECT_AUTH` in the order configured:
   - `signed`: `?expires=&signature=`, `signature = hex(HMAC-SHA256(CONNECT_SIGNING_SECRET, "<user>:<expires>"))`,
     compared in constant time;
   - `jwt`: the session JWT in the cookie named by `JWT_COOKIE` (see jwt_auth.py for what is verified);
   - `header`: the user named by `AUTH_USER_HEADER` (default `X-Forwarded-User`), honoured only when the TCP peer (the
     socket address, never `X-Forwarded-For`) is inside `TRUSTED_PROXIES`; from anyone else it is ignored;
   - `none`: anyone, for the local demo only.
A mode that finds no credential of its kind passes to the next; one that finds a bad credential refuses at once, so
a forged signature or token never falls through to a weaker mode. Nothing found at all → 401.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from .errors import Forbidden, Unauthenticated
from .jwt_auth import SessionTokenVerifier
from .settings import Settings


@dataclass(frozen=True)
class Caller:
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
            authorization=environ.get("HTTP_AUTHORIZATION"),  # headers.get raises (and catches) when it is missing
            query=request.args,
            cookies=request.cookies if "HTTP_COOKIE" in environ else {},  # parsing costs even an empty header
            headers=request.headers,
            peer=peer,
        )


def sign(user: str, expires: int, secret: str) -> str:
    # hmac.digest is the one-shot C implementation: several times faster than hmac.new on this hot path.
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


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def parse_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`TRUSTED_PROXIES`: CIDRs or single addresses. Raises ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def peer_is_trusted(peer: str | None, networks: tuple) -> bool:
    if not peer or not networks:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False  # a unix socket or anything else that is not an IP address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def proxy_user(presented: PresentedCredentials, header: str, networks: tuple) -> Caller | None:
    """The user a trusted auth proxy vouches for, or None when the peer is not trusted or sent no such header."""
    if not peer_is_trusted(presented.peer, networks):
        return None
    headers = presented.headers
    values = headers.getlist(header) if hasattr(headers, "getlist") else [headers.get(header)]
    values = [value.strip() for value in values if value and value.strip()]
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise Unauthenticated("The auth proxy sent more than one user.", code="bad_proxy_header")
    return Caller(kind="header", user=values[0])


class Authenticator:
    def __init__(self, settings: Settings, jwt_verifier: SessionTokenVerifier | None = None):
        self.modes = settings.connect_auth
        self.signing_secret = settings.signing_secret
        self.max_ttl = settings.signed_link_max_ttl
        self._internal_token = (settings.internal_api_token or "").encode()
        if jwt_verifier is None and "jwt" in self.modes:
            jwt_verifier = SessionTokenVerifier.from_settings(settings)
        self.jwt = jwt_verifier
        self.jwt_cookie = getattr(settings, "jwt_cookie", None)
        self.user_header = getattr(settings, "auth_user_header", "X-Forwarded-User")
        self.trusted_proxies = parse_networks(getattr(settings, "trusted_proxies", ()))

    def identify(self, user: str, presented: PresentedCredentials, now: float | None = None) -> Caller:
        now = time.time() if now is None else now
        token = bearer_token(presented.authorization)
        if token is not None and (self._internal_token or self.jwt is not None):
            if self._internal_token and hmac.compare_digest(token.encode("utf-8", "replace"), self._internal_token):
                return Caller(kind="internal", user=None)
            if self.jwt is None:
                raise Unauthenticated("The bearer token is not valid.", code="bad_token")
            return Caller(kind="jwt", user=self.jwt.user_of(token))
        for mode in self.modes:
            caller = self._try_mode(mode, user, presented, now)
            if caller is not None:
                return caller
        raise Unauthenticated()

    def _try_mode(self, mode: str, user: str, presented: PresentedCredentials, now: float) -> Caller | None:
        if mode == "signed":
            return check_signature(user, presented.query, self.signing_secret or "", self.max_ttl, now)
        if mode == "jwt":
            token = presented.cookies.get(self.jwt_cookie) if self.jwt_cookie else None
            return Caller(kind="jwt", user=self.jwt.user_of(token)) if token else None
        if mode == "header":
            return proxy_user(presented, self.user_header, self.trusted_proxies)
        if mode == "none":
            return Caller(kind="open", user=None)
        raise AssertionError(f"unhandled auth mode {mode}")  # settings validation makes this unreachable
