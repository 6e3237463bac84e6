"""Encryption at rest for cached linking URLs (`CACHE_ENCRYPTION_KEY`).

A cached linking URL carries the API key inside its JWT, so anyone who can read Redis (a shared instance, a backup,
a `MONITOR` session) could read it. With `CACHE_ENCRYPTION_KEY` set, `RedisLinkStore` stores each record as a Fernet
token (AES-128-CBC + HMAC-SHA256, with a timestamp) instead of JSON.

Rotation: the setting is a comma-separated list of Fernet keys. The first encrypts; every key decrypts
(`MultiFernet`). To rotate, put a new key first, keep the old one until the cache has turned over (entries live no
longer than a link's lifetime, at most 48 h), then drop it. An entry no key can decrypt is a cache miss, never an
error, so changing keys or switching encryption on or off costs one upstream call per cached link at most.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def parse_keys(value: str) -> list[Fernet]:
    """Raises ValueError naming the position of a key that is not a Fernet key (never the key itself)."""
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


class FernetCodec:
    """The `Codec` of `link_store` that encrypts with the first key and decrypts with any of them."""

    def __init__(self, value: str):
        self._fernet = MultiFernet(parse_keys(value))

    def encode(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decode(self, data: bytes) -> bytes:
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise ValueError("cache entry not readable with the configured keys") from None
