"""Session tokens from the team's identity provider (`CONNECT_AUTH=jwt`): `SessionTokenVerifier` and `JwksCache`.

A token must carry a pinned `JWT_ALGORITHMS` algorithm, verify against the one configured key source, and have valid
`exp`, `iss` and `aud`. JWKS keys are cached and refetched for an unknown `kid` at most once per
`JWKS_MIN_REFRESH_SECONDS`, so random `kid`s cannot turn the service into a load generator.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
import requests

from ..config.keys import load_public_key
from ..errors import Unauthenticated

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 8192
JWKS_TTL_SECONDS = 300
JWKS_MIN_REFRESH_SECONDS = 30
JWKS_TIMEOUT_SECONDS = 3.0
_BAD_TOKEN = "The session token is not valid. Sign in again."  # noqa: S105 - a message, not a secret


class JwksCache:
    """The identity provider's signing keys by `kid`, fetched over HTTPS with a short timeout."""

    def __init__(
        self,
        url: str,
        session: requests.Session | None = None,
        ttl: float = JWKS_TTL_SECONDS,
        min_refresh: float = JWKS_MIN_REFRESH_SECONDS,
    ):
        self.url = url
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.fetches = 0  # for tests and metrics
        self._session = session or requests.Session()
        self._keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = threading.Lock()
        self._fetching = False
        self._fetched = threading.Condition(self._lock)

    def key_for(self, kid: str | None) -> tuple[jwt.PyJWK, str | None] | None:
        """The key for `kid` and the algorithm it was published for (None when the JWK names none)."""
        with self._lock:
            now = time.monotonic()
            known = kid in self._keys
            wanted = now - self._fetched_at > self.ttl or not known
            fetch_now = wanted and not self._fetching and now - self._attempted_at >= self.min_refresh
            if fetch_now:
                self._fetching = True
                self._attempted_at = now
            elif known or not self._fetching:
                return self._keys.get(kid)
            else:  # a new kid while another request fetches: that fetch may bring it
                self._fetched.wait_for(lambda: not self._fetching, timeout=JWKS_TIMEOUT_SECONDS + 1)
                return self._keys.get(kid)
        try:
            self._refresh(now)
        finally:
            with self._lock:
                self._fetching = False
                self._fetched.notify_all()
        return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        self.fetches += 1
        try:
            response = self._session.get(self.url, timeout=JWKS_TIMEOUT_SECONDS, allow_redirects=False)
            response.raise_for_status()
            entries = response.json()["keys"]
            if not isinstance(entries, list):
                raise ValueError("keys is not a list")
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            log.warning("jwks fetch failed; keeping the keys we have", extra={"error_type": type(error).__name__})
            return
        keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[entry.get("kid")] = (jwt.PyJWK(entry), entry.get("alg"))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key type we cannot use; the others still count
        if len(keys) == 1:  # a lone key also serves tokens that carry no `kid`
            keys[None] = next(iter(keys.values()))
        self._keys, self._fetched_at = keys, now


class SessionTokenVerifier:
    def __init__(
        self,
        *,
        algorithms: tuple[str, ...],
        issuer: str,
        audience: str,
        user_claim: str = "sub",
        leeway: int = 30,
        hs_secret: str | None = None,
        public_key_pem: str | None = None,
        jwks: JwksCache | None = None,
    ):
        sources = [source for source in (hs_secret, public_key_pem, jwks) if source]
        if len(sources) != 1:
            raise ValueError("exactly one key source")
        if "none" in {alg.lower() for alg in algorithms}:
            raise ValueError("alg none is never allowed")
        self.algorithms = frozenset(algorithms)
        self.issuer, self.audience, self.user_claim, self.leeway = issuer, audience, user_claim, leeway
        self._hs_secret = hs_secret.encode() if hs_secret else None
        self._public_key = load_public_key(public_key_pem) if public_key_pem else None
        self.jwks = jwks

    @classmethod
    def from_settings(cls, settings) -> SessionTokenVerifier:
        return cls(
            algorithms=settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            user_claim=settings.jwt_user_claim,
            leeway=settings.jwt_leeway,
            hs_secret=settings.jwt_hs256_secret,
            public_key_pem=settings.jwt_public_key,
            jwks=JwksCache(settings.jwt_jwks_url) if settings.jwt_jwks_url else None,
        )

    def user_of(self, token: str) -> str:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(_BAD_TOKEN, code="bad_token")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated(_BAD_TOKEN, code="bad_token") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise Unauthenticated("The session token uses an algorithm this service does not accept.", code="bad_token")
        key = self._key_for(algorithm, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The session token has expired. Sign in again.", code="token_expired") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated(_BAD_TOKEN, code="bad_token") from None
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            raise Unauthenticated("The session token does not name a user.", code="bad_token")
        return user

    def _key_for(self, algorithm: str, kid: object) -> Any:
        if self._hs_secret is not None:
            return self._hs_secret
        if self._public_key is not None:
            return self._public_key
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated(_BAD_TOKEN, code="bad_token")
        found = self.jwks.key_for(kid)
        if found is None:
            raise Unauthenticated(
                "The session token was signed with a key this service does not know.", code="bad_token"
            )
        jwk, declared = found
        if declared is not None and declared != algorithm:  # a key published for one algorithm verifies no other
            raise Unauthenticated(_BAD_TOKEN, code="bad_token")
        return jwk.key
