"""Key material from settings: the team's RSA private key, a session-JWT public key, the cache's Fernet keys.

The private key is accepted in every shape an operator pastes it in (lost newlines, literal `\\n`, quotes, base64 of
the PEM) and rebuilt as a canonical PEM. Nothing here ever puts key material into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

_PEM_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[A-Z ]*PRIVATE KEY)-----(?P<body>.*?)-----END (?P=label)-----", re.DOTALL
)


class KeyFormatError(ValueError):
    """The text is not a usable RSA private key. The message never contains key material."""


@dataclass(frozen=True)
class SigningKey:
    pem: str  # canonical PEM text, sent to Ayrshare as `privateKey`
    public_key: RSAPublicKey  # verifies the tokens Ayrshare signs with the private half

    def __repr__(self) -> str:  # keeps the PEM out of debug output and tracebacks' locals
        return "SigningKey(<redacted>)"


def load_signing_key(text: str) -> SigningKey:
    pem = canonical_pem(text)
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise KeyFormatError("the key is encrypted with a passphrase; provide the unencrypted PEM") from None
    except (ValueError, binascii.Error):
        raise KeyFormatError("not a readable PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise KeyFormatError("not an RSA key (Ayrshare signs with RS256)")
    return SigningKey(pem=pem, public_key=key.public_key())


def canonical_pem(text: str) -> str:
    """Rebuild a PEM block with real newlines and 64-column lines from a mangled paste."""
    cleaned = text.strip().strip("'\"").strip()
    cleaned = cleaned.replace("\\r", "").replace("\\n", "\n")
    if "-----BEGIN" not in cleaned:
        cleaned = _decode_base64_pem(cleaned)
    match = _PEM_BLOCK.search(cleaned)
    if not match:
        raise KeyFormatError("no '-----BEGIN ... PRIVATE KEY-----' block found (also tried base64 and \\n escapes)")
    body = re.sub(r"\s+", "", match.group("body"))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    label = match.group("label")
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def _decode_base64_pem(text: str) -> str:
    try:
        decoded = base64.b64decode(re.sub(r"\s+", "", text), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise KeyFormatError("neither PEM text nor base64-encoded PEM") from None
    return decoded.strip()


def load_public_key(text: str) -> Any:
    """A PEM public key (tolerating literal `\\n` escapes); raises ValueError when `text` is not one."""
    return serialization.load_pem_public_key(text.strip().replace("\\n", "\n").encode())


def parse_fernet_keys(value: str) -> list[Fernet]:
    """`CACHE_ENCRYPTION_KEY`: comma-separated Fernet keys, the first encrypts. Raises ValueError naming the position
    of a key that is not a Fernet key (never the key itself)."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise ValueError("must hold at least one key")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except (ValueError, TypeError):
            raise ValueError(
                f"key {position} is not a Fernet key (make one with: python -c "
                '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
            ) from None
    return fernets
