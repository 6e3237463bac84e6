"""RSA key handling: parse the posted private key, compare it with the registration, sign tokens.

The vendor signs the linking token with the private key the caller POSTs (it never stores that key) and
the linking page later verifies it with the public key registered at onboarding.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from functools import lru_cache

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# The audience claim in the vendor's sample token.
JWT_AUDIENCE = "https://app.ayrshare.com"
JWT_ALGORITHM = "RS256"


class PrivateKeyError(ValueError):
    """The posted privateKey is not a usable RSA private key (vendor error 189)."""


def parse_private_key(private_key_text: str, is_base64: bool) -> RSAPrivateKey:
    """Parse `privateKey` as the vendor would: PEM text, or base64 of the PEM when `base64: true`.

    Raises PrivateKeyError for anything unusable, including keys whose newlines were lost, which is the
    pitfall the vendor's error 189 message describes.
    """
    return _parse_private_key_cached(private_key_text, is_base64)


# Callers send the same key on every request; RSA key loading validates the key (tens of ms), so caching
# keeps benchmarks measuring the client rather than this parse. Failures are not cached, which is fine.
@lru_cache(maxsize=64)
def _parse_private_key_cached(private_key_text: str, is_base64: bool) -> RSAPrivateKey:
    pem = private_key_text.encode("utf-8")
    if is_base64:
        try:
            pem = base64.b64decode(pem, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise PrivateKeyError("privateKey is not valid base64") from exc
    _require_openssl_pem_layout(pem)
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # TypeError: the PEM is encrypted; the vendor accepts no passphrase, so that is unusable too.
        raise PrivateKeyError(str(exc)) from exc
    if not isinstance(key, RSAPrivateKey):
        raise PrivateKeyError("privateKey is not an RSA key; RS256 needs one")
    return key


_PEM_BEGIN = re.compile(rb"^-----BEGIN [A-Z0-9 ]+-----$")
_PEM_END = re.compile(rb"^-----END [A-Z0-9 ]+-----$")
_BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/=]+$")


def _require_openssl_pem_layout(pem: bytes) -> None:
    """Refuse PEM that OpenSSL (behind the vendor's API) refuses, even where `cryptography` is lenient.

    `cryptography` accepts a key whose newlines became spaces; OpenSSL reports "no start line", which is
    the pitfall the vendor documents. Like OpenSSL, lines before the BEGIN line are skipped, so an
    indented BEGIN line is never found. Stray spaces or tabs inside the body are refused as well, per the
    vendor's advice that extra tabs or spaces break parsing.
    """
    lines = [line.rstrip(b"\r") for line in pem.split(b"\n")]
    begin = next((i for i, line in enumerate(lines) if _PEM_BEGIN.match(line)), None)
    if begin is None:
        raise PrivateKeyError("no start line")
    end = next((i for i in range(begin + 1, len(lines)) if _PEM_END.match(lines[i])), None)
    if end is None:
        raise PrivateKeyError("no end line")
    if any(not _BASE64_LINE.match(line) for line in lines[begin + 1 : end]):
        raise PrivateKeyError("bad base64 body line")


def key_matches(private_key: RSAPrivateKey, public_key: RSAPublicKey) -> bool:
    """True when the private key is the other half of the registered public key."""
    return private_key.public_key().public_numbers() == public_key.public_numbers()


def mint_token(
    private_key: RSAPrivateKey,
    *,
    api_key: str,
    profile_key: str,
    domain: str,
    subject: str,
    lifetime_seconds: int,
    issued_at: int | None = None,
) -> str:
    """Sign a linking token carrying the claims of the vendor's sample token.

    Claims: apiKey, profileKey, iat, exp, aud, iss (the domain), sub (the account's e-mail).
    """
    iat = int(time.time()) if issued_at is None else issued_at
    claims = {
        "apiKey": api_key,
        "profileKey": profile_key,
        "iat": iat,
        "exp": iat + lifetime_seconds,
        "aud": JWT_AUDIENCE,
        "iss": domain,
        "sub": subject,
    }
    return jwt.encode(claims, private_key, algorithm=JWT_ALGORITHM)


def verify_token(token: str, public_key: RSAPublicKey, domain: str) -> dict:
    """Decode a linking token as the linking page does.

    Raises jwt.ExpiredSignatureError for an expired token and jwt.InvalidTokenError for anything else wrong.
    """
    return jwt.decode(
        token,
        public_key,
        algorithms=[JWT_ALGORITHM],
        audience=JWT_AUDIENCE,
        issuer=domain,
        options={"require": ["exp", "iat", "aud", "iss", "profileKey"]},
    )


_foreign_key_lock = threading.Lock()
_foreign_key: RSAPrivateKey | None = None


def foreign_private_key() -> RSAPrivateKey:
    """A key pair nobody registered, for the "unsigned" fault; generated once, lazily (it takes ~100 ms)."""
    global _foreign_key
    with _foreign_key_lock:
        if _foreign_key is None:
            _foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _foreign_key
