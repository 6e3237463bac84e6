"""Getting a user's linking URL: the use case, the request options, the cache stores and the single-flight broker."""

from .broker import LinkBroker
from .connect import ConnectService, Timings, UpstreamFetch
from .store import MemoryLinkStore, RedisLinkStore, StoreUnavailable, cache_key
from .user_links import ConnectEmailSchema, UserLinks

__all__ = [
    "ConnectEmailSchema",
    "ConnectService",
    "LinkBroker",
    "MemoryLinkStore",
    "RedisLinkStore",
    "StoreUnavailable",
    "Timings",
    "UpstreamFetch",
    "UserLinks",
    "cache_key",
]
