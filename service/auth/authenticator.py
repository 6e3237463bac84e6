"""`Authenticator.identify(user, presented)`: who is asking, before anything else happens (401/403 otherwise).

A bearer token is checked first (`INTERNAL_API_TOKEN`, or a session JWT); then each `CONNECT_AUTH` mode in order
(`signed`, `jwt` cookie, trusted-proxy `header`, demo-only `none`). A mode that finds a bad credential refuses at once,
so a forged credential never falls through to a weaker mode.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

from ..config import Settings
from ..errors import Forbidden, Unauthenticated
from .caller import Caller, PresentedCredentials
from .session_jwt import SessionTokenVerifier
from .signed_links import check_signature


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_internal_token(authorization: str | None, internal_token: str | None) -> None:
    """The only way into `/internal/v1/`: the bearer `INTERNAL_API_TOKEN` (signed links, session JWTs and proxy
    headers never open it)."""
    if not internal_token:
        raise Forbidden("The internal API is off: set INTERNAL_API_TOKEN to use it.", code="internal_api_disabled")
    token = bearer_token(authorization)
    if token is None:
        raise Unauthenticated("This endpoint needs the internal API token as a bearer token.", code="auth_required")
    if not hmac.compare_digest(token.encode("utf-8", "replace"), internal_token.encode()):
        raise Unauthenticated("The bearer token is not the internal API token.", code="bad_token")


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
    """Tells who a request comes from, in the order above; built once from the settings."""

    def __init__(self, settings: Settings, jwt_verifier: SessionTokenVerifier | None = None):
        self.modes = settings.connect_auth
        self.signing_secret = settings.signing_secret
        self.max_ttl = settings.signed_link_max_ttl
        self._internal_token = (settings.internal_api_token or "").encode()
        if jwt_verifier is None and "jwt" in self.modes:
            jwt_verifier = SessionTokenVerifier.from_settings(settings)
        self.jwt = jwt_verifier
        self.jwt_cookie = settings.jwt_cookie
        self.user_header = settings.auth_user_header
        self.trusted_proxies = parse_networks(settings.trusted_proxies)

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
