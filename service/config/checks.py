"""Start-time checks and warnings for the security settings: caller identity, redirects, CORS, rate limits, proxies
and cache encryption.

`check(data)` refuses combinations that would start an unsafe service (`ValidationError` naming the setting);
`weakened_settings(settings)` lists one warning per setting that loosens a safe default, logged at every start.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from marshmallow import ValidationError

from ..urls import RedirectAllowlist, is_bare_origin, is_loopback, is_trusted_default_redirect
from .keys import load_public_key, parse_fernet_keys

_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ZERO_PERIOD = re.compile(r"(?:/|\bper)\s*0+\s*[a-z]", re.IGNORECASE)  # "10/0 minutes", "10 per 0 hours"
DEFAULT_SIGNED_LINK_MAX_TTL = 900
SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def check(data: dict[str, Any]) -> None:
    modes = data["connect_auth"]
    if "jwt" in modes:
        _check_jwt(data)
    if "header" in modes and not data["trusted_proxies"]:
        raise ValidationError(
            "is required when CONNECT_AUTH includes 'header' (CIDRs of the auth proxies)", "TRUSTED_PROXIES"
        )
    for position, entry in enumerate(data["trusted_proxies"], start=1):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValidationError(f"entry {position} is not an IP address or CIDR", "TRUSTED_PROXIES") from None
    if not _HEADER_NAME.fullmatch(data["auth_user_header"]):
        raise ValidationError("must be an HTTP header name", "AUTH_USER_HEADER")
    try:
        RedirectAllowlist.parse(data["redirect_allowed_hosts"])
    except ValueError as error:
        raise ValidationError(str(error), "REDIRECT_ALLOWED_HOSTS") from None
    if data.get("default_redirect") and not is_trusted_default_redirect(data["default_redirect"]):
        raise ValidationError(
            "must be an https URL (http only on a loopback host) without user info or spaces", "AYRSHARE_REDIRECT"
        )
    for position, origin in enumerate(data["cors_allowed_origins"], start=1):
        if not is_bare_origin(origin):
            raise ValidationError(
                f"entry {position} must be an exact origin such as https://app.example.com (no wildcard, no path)",
                "CORS_ALLOWED_ORIGINS",
            )
    for name in (
        "RATE_LIMIT_PER_ADDRESS",
        "RATE_LIMIT_PER_USER",
        "RATE_LIMIT_UPSTREAM_PER_USER",
        "RATE_LIMIT_UPSTREAM_GLOBAL",
        "CONNECT_EMAIL_PER_USER",
    ):
        try:
            limits = parse_many(data[name.lower()])
        except ValueError:
            raise ValidationError("must be a limit such as '30/minute' or '10 per 5 minutes'", name) from None
        # `limits` reads "10 per 0 minutes" as 10 per minute, and 0/minute would refuse everything.
        if any(limit.amount < 1 for limit in limits) or _ZERO_PERIOD.search(data[name.lower()]):
            raise ValidationError(
                "needs at least 1 per period of at least 1 (to switch limits off: RATE_LIMIT_ENABLED=0)", name
            )
    for position, entry in enumerate(data["link_allowed_hosts"], start=1):
        parts = urlsplit(entry if "://" in entry else f"https://{entry}")
        if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not is_loopback(parts.hostname or "")):
            raise ValidationError(
                f"entry {position} must be a host (https) or an http:// origin on a loopback host (the emulator)",
                "LINK_ALLOWED_HOSTS",
            )
    # urlsplit lower-cases the host; a trailing dot (the fully qualified name) is the same host to DNS.
    if data["demo"] and (urlsplit(data["base_url"]).hostname or "").rstrip(".").endswith("ayrshare.com"):
        # /demo lists users with working links for each of them: harmless against the emulator, a hole in front
        # of the real Ayrshare.
        raise ValidationError("the demo only runs against the emulator, not the real AYRSHARE_BASE_URL", "DEMO_MODE")
    if data.get("cache_encryption_key"):
        try:
            parse_fernet_keys(data["cache_encryption_key"])
        except ValueError as error:
            raise ValidationError(str(error), "CACHE_ENCRYPTION_KEY") from None


def _check_jwt(data: dict[str, Any]) -> None:
    sources = [name for name in ("jwt_jwks_url", "jwt_public_key", "jwt_hs256_secret") if data.get(name)]
    if len(sources) != 1:
        raise ValidationError(
            "CONNECT_AUTH=jwt needs exactly one of JWT_JWKS_URL, JWT_PUBLIC_KEY or JWT_HS256_SECRET", "JWT_JWKS_URL"
        )
    symmetric = sources == ["jwt_hs256_secret"]
    if not data.get("jwt_algorithms"):
        data["jwt_algorithms"] = ["HS256"] if symmetric else ["RS256"]
    algorithms = set(data["jwt_algorithms"])
    family = SYMMETRIC_ALGORITHMS if symmetric else ASYMMETRIC_ALGORITHMS
    if not algorithms <= family:
        kind = "JWT_HS256_SECRET (HS256/384/512)" if symmetric else "a public key (RS*, PS*, ES*, EdDSA)"
        raise ValidationError(f"must only name algorithms that fit {kind}; never 'none'", "JWT_ALGORITHMS")
    if symmetric and len(data["jwt_hs256_secret"]) < 32:
        raise ValidationError("must be at least 32 characters", "JWT_HS256_SECRET")
    if data.get("jwt_public_key"):
        try:
            load_public_key(data["jwt_public_key"])
        except (ValueError, TypeError):
            raise ValidationError("is not a PEM public key", "JWT_PUBLIC_KEY") from None
    if data.get("jwt_jwks_url"):
        parts = urlsplit(data["jwt_jwks_url"])
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            raise ValidationError("must be an https URL", "JWT_JWKS_URL")
    for name in ("JWT_ISSUER", "JWT_AUDIENCE"):
        if not data.get(name.lower()):
            raise ValidationError("is required when CONNECT_AUTH includes 'jwt'", name)
    if data.get("jwt_cookie") and not _COOKIE_NAME.fullmatch(data["jwt_cookie"]):
        raise ValidationError("must be a cookie name", "JWT_COOKIE")


def redis_is_remote(redis_url: str | None) -> bool:
    if not redis_url or redis_url.startswith("unix://"):
        return False
    return not is_loopback(urlsplit(redis_url).hostname or "")


def weakened_settings(settings) -> list[str]:
    """One line per setting that loosens a safe default (values never included)."""
    warnings = []
    if settings.link_flow == "jwt":
        warnings.append(
            "AYRSHARE_LINK_FLOW=jwt: every linking URL carries the team's API key as a readable token claim, so each "
            "user who opens one can read it. Use the default, AYRSHARE_LINK_FLOW=session, unless you must."
        )
    if "none" in settings.connect_auth:
        warnings.append("CONNECT_AUTH includes 'none': anyone can open any user's linking page. Local demo only.")
    if "header" in settings.connect_auth:
        broad = [net for net in settings.trusted_proxies if ipaddress.ip_network(net, strict=False).num_addresses > 256]
        warnings.append(
            "CONNECT_AUTH includes 'header': whoever connects from TRUSTED_PROXIES is believed about the user"
            + (" (and TRUSTED_PROXIES holds networks larger than /24)." if broad else ".")
        )
    if settings.trusted_proxy_count:
        warnings.append(
            "TRUSTED_PROXY_COUNT is set: client addresses come from X-Forwarded-For; if fewer proxies are really in "
            "front, clients can choose their own address for rate limiting."
        )
    if settings.jwt_leeway > 60:
        warnings.append("JWT_LEEWAY_SECONDS is above 60: expired session tokens stay usable that much longer.")
    if settings.signed_link_max_ttl > DEFAULT_SIGNED_LINK_MAX_TTL:
        warnings.append("SIGNED_LINK_MAX_TTL_SECONDS is above 15 minutes: a leaked signed link stays usable longer.")
    if settings.default_redirect and settings.default_redirect.startswith("http://"):
        warnings.append("AYRSHARE_REDIRECT uses plain http (loopback only): fine for the demo, not for production.")
    allowlist = RedirectAllowlist.parse(settings.redirect_allowed_hosts)
    if any(scheme == "http" for scheme, _, _ in allowlist.origins):
        warnings.append("REDIRECT_ALLOWED_HOSTS allows plain http on a loopback origin: demo only.")
    if allowlist.suffixes:
        warnings.append("REDIRECT_ALLOWED_HOSTS allows whole domains (.example.com): every subdomain is trusted.")
    if any(not entry.startswith("https://") for entry in settings.link_allowed_hosts if "://" in entry):
        warnings.append("LINK_ALLOWED_HOSTS allows plain http linking URLs: only for the local emulator.")
    if any(not origin.startswith("https://") for origin in settings.cors_allowed_origins):
        warnings.append("CORS_ALLOWED_ORIGINS lists plain http origins: their pages can be altered in transit.")
    if not settings.rate_limit_enabled:
        warnings.append("RATE_LIMIT_ENABLED is off: nothing stops a caller from spending the Ayrshare quota.")
    if redis_is_remote(settings.redis_url) and not settings.redis_url.startswith("rediss://"):
        warnings.append("REDIS_URL points at another host without TLS (redis://): use rediss:// where possible.")
    if settings.worker_class == "sync":
        warnings.append(
            "GUNICORN_WORKER_CLASS=sync: each worker serves one request at a time, so one slow client or Ayrshare "
            "call holds it. Only behind a buffering proxy, with enough workers."
        )
    if settings.demo:
        warnings.append("DEMO_MODE is on: demo pages and defaults are enabled. Never in production.")
    return warnings
