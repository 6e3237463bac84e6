"""Encryption at rest for cached linking URLs (`CACHE_ENCRYPTION_KEY`): each record stored as a Fernet token.

The first key encrypts and every key decrypts (`MultiFernet`), so keys rotate by putting a new one first. An entry no
key can decrypt is a cache miss, never an error.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken, MultiFernet

from ..config.keys import parse_fernet_keys


class FernetCodec:
    """The store's `Codec` that encrypts with the first key and decrypts with any of them."""

    def __init__(self, value: str):
        self._fernet = MultiFernet(parse_fernet_keys(value))

    def encode(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decode(self, data: bytes) -> bytes:
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise ValueError("cache entry not readable with the configured keys") from None
