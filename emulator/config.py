"""Static configuration of one emulator instance: who it accepts and what it has registered.

An Ayrshare account on the Business plan registers exactly one domain together with the public half of an
RSA key pair at onboarding; the emulator models that single registration plus the account's API keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

# Title returned when no profiles file is configured; it is the value in the vendor's response sample.
DEFAULT_PROFILE_TITLE = "User Profile Title"

# The vendor's sample token carries the account owner's e-mail in `sub`; the emulator has no real owner.
DEFAULT_ACCOUNT_EMAIL = "owner@example.com"

# The webhooks overview: a failed delivery is retried twice, after 5 s and 30 s; an answer later than 10 s is a failure.
DEFAULT_WEBHOOK_RETRY_DELAYS = (5.0, 30.0)
DEFAULT_WEBHOOK_TIMEOUT = 10.0


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything `create_app` needs; immutable so request threads can share it without a lock.

    domain: the domain registered at onboarding; generateJWT requires exactly this string.
    public_key: the registered public key the linking page verifies tokens against.
    api_keys: API keys of the Primary Profile that are accepted in `Authorization: Bearer`.
    profiles: `{profileKey: title}`; None means "any profile key is accepted".
    link_base: where generated URLs point (the linking page); None derives it from the request host.
    webhook_retry_delays, webhook_timeout: seconds between webhook delivery attempts, and the receiver's answer limit.
    """

    domain: str
    public_key: RSAPublicKey
    api_keys: tuple[str, ...]
    profiles: dict[str, str] | None = None
    link_base: str | None = None
    account_email: str = DEFAULT_ACCOUNT_EMAIL
    webhook_retry_delays: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_DELAYS
    webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT

    def __post_init__(self) -> None:
        if not self.domain:
            raise ValueError("domain must not be empty")
        if not self.api_keys:
            raise ValueError("at least one API key is required")
        if not isinstance(self.public_key, RSAPublicKey):
            # RS256 is the only algorithm the vendor uses, so a non-RSA registration could never verify.
            raise ValueError("the registered public key must be an RSA key")
        if any(delay < 0 for delay in self.webhook_retry_delays) or self.webhook_timeout <= 0:
            raise ValueError("webhook retry delays must be >= 0 and the webhook timeout > 0")

    def profile_title(self, profile_key: str) -> str | None:
        """Title of a known profile, or None when a profiles file is configured and the key is unknown."""
        if self.profiles is None:
            return DEFAULT_PROFILE_TITLE
        return self.profiles.get(profile_key)


def load_public_key(path: str | Path) -> RSAPublicKey:
    """Read the registered public key (PEM, SubjectPublicKeyInfo or PKCS#1)."""
    key = load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"{path}: not an RSA public key")
    return key


def load_profiles(path: str | Path) -> dict[str, str]:
    """Read a profiles file: a JSON object mapping profileKey to the profile's title."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object of profileKey -> title strings")
    return data
