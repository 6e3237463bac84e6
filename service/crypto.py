"""Authenticated encryption at rest: cached links in Redis and profile keys in the directory, as Fernet tokens.

The keys come from `CACHE_ENCRYPTION_KEY` / `DATA_ENCRYPTION_KEY` (the first encrypts, every one decrypts, so keys
rotate by putting a new one first) or, for the cache and the demo, one derived from the API key. A value someone else
wrote cannot be read: for the cache that is a miss, never a redirect and never an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import InvalidToken, MultiFernet

from .config.keys import parse_fernet_keys


def derived_cache_key(api_key: str, label: bytes = b"ayrshare-connect cache values v1") -> str:
    """A Fernet key only this deployment can make: an HMAC of a fixed label under the API key it already holds."""
    digest = hmac.new(api_key.encode(), label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()


class FernetCodec:
    """The store's `Codec` that encrypts with the first key and decrypts with any of them."""

    def __init__(self, value: str):
        self._fernet = MultiFernet(parse_fernet_keys(value))

    @classmethod
    def for_settings(cls, cache_encryption_key: str | None, api_key: str) -> FernetCodec:
        return cls(cache_encryption_key) if cache_encryption_key else cls(derived_cache_key(api_key))

    def rotate(self, token: bytes) -> bytes:
        """The same value encrypted under the first key (after a new key was put first)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise ValueError("value not readable with the configured keys") from None

    def encode(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decode(self, data: bytes) -> bytes:
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise ValueError("value not readable with the configured keys") from None
