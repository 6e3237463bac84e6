"""Getting a user's linking URL: the use case, the request options, the cache stores and the single-flight broker."""

from .broker import LinkBroker
from .connect import ConnectService, Timings, UpstreamFetch, validate_user
from .crypto import FernetCodec
from .store import MemoryLinkStore, RedisLinkStore, StoreUnavailable, cache_key

__all__ = [
    "ConnectService",
    "FernetCodec",
    "LinkBroker",
    "MemoryLinkStore",
    "RedisLinkStore",
    "StoreUnavailable",
    "Timings",
    "UpstreamFetch",
    "cache_key",
    "validate_user",
]
