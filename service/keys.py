"""Loading the team's RSA private key from whatever form an operator pasted it in.

The vendor's most common support problem is a broken private key: newlines lost when the key was pasted into an
environment variable, literal `\\n` escapes, stray spaces or quotes, or the whole PEM base64-encoded. We accept all of
those, rebuild a canonical PEM (the text we send to Ayrshare), and keep the public half to verify the tokens Ayrshare
signs with it. Nothing here ever puts key material into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

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
