"""Where linking URLs are kept between requests: `RedisLinkStore` in production, `MemoryLinkStore` for one process.

Both keep a link record under its cache key with a TTL, a short-lived failure marker beside it, a fetch lock per key
(on Redis, SET NX PX with an owner token, freed by a compare-and-delete script), and per user the index of links
handed out (so they can be dropped and revoked) with tombstones for revoked sessions. Any Redis error raises
`StoreUnavailable`; an unreachable or silent Redis is then skipped for `retry_interval` seconds (but for a lock
holder's writes), so it costs one timeout per interval instead of one per request. A Redis that refuses writes (out
of memory, read-only) is not skipped: its reads still serve the links it holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..config.connections import NODE_SCHEMES, redis_nodes, redis_scheme
from ..errors import StoreUnavailable
from ..upstream import Link, LinkOptions

log = logging.getLogger(__name__)
# What a failing Redis raises: the cluster client's "no node reachable" is not a RedisError.
REDIS_FAILURES = (redis.RedisError, RedisClusterException)
WRITES_REFUSED = (OutOfMemoryError, ReadOnlyError)  # Redis answers, and its reads still work

KEY_PREFIX = "connect:link:v1:"
USER_PREFIX = "connect:user:v1:"
INDEX_TTL_SECONDS = 2880 * 60 + 3600  # the longest link Ayrshare makes (48 h), plus an hour
TOMBSTONE_EXTRA_SECONDS = 60
_RELEASE_IF_OURS = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
Record = tuple[str, float]  # (url, expires_at)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def user_scope(credential_fingerprint: str, domain: str, profile_key: str) -> str:
    """Names one user's keys (their links, their index); hashed so no profile key or secret appears in Redis."""
    return _digest("\0".join([credential_fingerprint, domain, profile_key]))


def cache_key(scope: str, options: LinkOptions) -> str:
    """Covers everything that changes the URL. `{scope}` is a Redis Cluster hash tag: a user's keys share a node."""
    return f"{KEY_PREFIX}{{{scope}}}:{_digest(options.fingerprint())}"


def scope_of(key: str) -> str:
    """The user scope inside a cache key's hash tag (a key without one is its own scope)."""
    start, end = key.find("{"), key.find("}")
    return key[start + 1 : end] if 0 <= start < end else key


@dataclass(frozen=True)
class HandedOut:
    """One link given to a user, as the user's index remembers it: its session (if any) and where it is cached."""

    session_id: str | None
    cache_key: str | None
    expires_at: float
    created_at: float

    @property
    def field(self) -> str:
        return _digest(self.session_id or self.cache_key or "")

    def to_json(self, scope: str) -> bytes:
        """Names the user scope it belongs to, so an entry copied into another user's index is not read there."""
        entry = {"o": scope, "s": self.session_id, "k": self.cache_key, "e": self.expires_at, "c": self.created_at}
        return json.dumps(entry).encode()

    @classmethod
    def from_json(cls, data: bytes, scope: str) -> HandedOut:
        item = json.loads(data)
        # Entries from before the scope was recorded have none: still read, or revoke would miss their sessions.
        if item.get("o", scope) != scope:
            raise ValueError("an index entry of another user")
        return cls(item["s"], item["k"], float(item["e"]), float(item["c"]))


def _index_key(scope: str) -> str:
    return f"{USER_PREFIX}{{{scope}}}:links"


def _tombstone_key(scope: str, session_id: str) -> str:
    return f"{USER_PREFIX}{{{scope}}}:revoked:{_digest(session_id)}"


class Codec(Protocol):
    """Turns the stored record into bytes and back (identity, or encryption at rest)."""

    def encode(self, data: bytes) -> bytes: ...
    def decode(self, data: bytes) -> bytes: ...


class PlainCodec:
    def encode(self, data: bytes) -> bytes:
        return data

    def decode(self, data: bytes) -> bytes:
        return data


class FetchLock(Protocol):
    """The right to call Ayrshare for one key; it expires by itself, so a crashed holder blocks nobody for long."""

    def acquire(self) -> bool: ...
    def release(self) -> None: ...


class RedisLinkStore:
    """Link records, failure markers and fetch locks in Redis (plain, TLS, Sentinel or Cluster)."""

    name = "redis"

    def __init__(
        self,
        client: redis.Redis,
        codec: Codec | None = None,
        retry_interval: float = 1.0,
        on_rejected: Callable[[], None] = lambda: None,
    ):
        self.client = client
        self.codec = codec or PlainCodec()
        self.retry_interval = retry_interval
        self.on_rejected = on_rejected  # hears every value that failed to decode (forged, or from another key)
        self._down_until = 0.0
        self._failed_at = 0.0  # the last failure: one warning per outage, not one per call
        # redis-py's Script: run by its SHA, loaded again by itself if Redis lost its scripts (a restart).
        self.release_if_ours = client.register_script(_RELEASE_IF_OURS)

    @classmethod
    def from_url(
        cls, url: str, timeout: float, codec: Codec | None = None, on_rejected: Callable[[], None] = lambda: None
    ) -> RedisLinkStore:
        return cls(redis_client_from_url(url, timeout), codec, on_rejected=on_rejected)

    def read(self, key: str) -> Record | None:
        return self._decode(key, self._call(self.client.get, key))

    def _decode(self, key: str, raw: bytes | None) -> Record | None:
        fields = self._open(key, raw)
        try:
            return None if fields is None else (str(fields["u"]), float(fields["e"]))
        except (KeyError, TypeError, ValueError):
            self.on_rejected()
            return None

    def read_with_marker(self, key: str) -> tuple[Record | None, str | None]:
        """The record and the failure marker beside it, in one round trip."""
        pipe = self.client.pipeline(transaction=False)  # not a transaction: the two keys may sit on two Cluster nodes
        pipe.get(key)
        pipe.get(f"{key}:error")
        raw, marker = self._call(pipe.execute)
        fields = self._open(key, marker) or {}  # sealed like the record: its words become an answer's message
        text = fields.get("m")
        return self._decode(key, raw), text if isinstance(text, str) else None

    def _seal(self, key: str, **fields) -> bytes:
        """A value for `key`, encrypted with the key inside: Fernet proves the service wrote it, the key for whom."""
        return self.codec.encode(json.dumps({"k": key, **fields}).encode())

    def _open(self, key: str, raw: bytes | None) -> dict | None:
        """The fields `_seal` put in for `key`; None for none, or (heard by `on_rejected`) for a value that is
        unreadable, forged or sealed for another key."""
        if raw is None:
            return None
        try:
            fields = json.loads(self.codec.decode(raw))
            if isinstance(fields, dict) and fields.get("k") == key:
                return fields
        except Exception:  # noqa: BLE001, S110 - unreadable (old format, rotated-out key): rejected below
            pass
        self.on_rejected()
        return None

    def write(self, key: str, link: Link, ttl_seconds: float) -> bool:
        """Cache the link and add it to its user's index; False when its session was revoked meanwhile (not kept).

        One pipeline on the user's node, in this order: index, link, tombstone check. A revoke writes its tombstones
        before it deletes the cached links, so one of the two always removes a link revoked while it was written.
        """
        scope = scope_of(key)
        handed_out = HandedOut(link.session_id, key, link.expires_at, time.time())
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(_index_key(scope), handed_out.field, self.codec.encode(handed_out.to_json(scope)))
        pipe.expire(_index_key(scope), INDEX_TTL_SECONDS)
        pipe.set(key, self._seal(key, u=link.url, e=link.expires_at), px=_ms(ttl_seconds))
        if link.session_id:
            pipe.exists(_tombstone_key(scope, link.session_id))
        results = self._call(pipe.execute, always=True)
        if link.session_id and results[-1]:
            self._call(self.client.delete, key, always=True)
            return False
        return True

    def write_marker(self, key: str, marker: str, ttl_seconds: float) -> None:
        self._call(self.client.set, f"{key}:error", self._seal(key, m=marker), px=_ms(ttl_seconds), always=True)

    def remember(self, scope: str, handed_out: HandedOut) -> None:
        """Add an uncached link (e.g. one sent by email) to the user's index."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(_index_key(scope), handed_out.field, self.codec.encode(handed_out.to_json(scope)))
        pipe.expire(_index_key(scope), INDEX_TTL_SECONDS)
        self._call(pipe.execute)

    def handed_out(self, scope: str) -> list[HandedOut]:
        """The user's links that have not expired, oldest first."""
        raw = self._call(self.client.hgetall, _index_key(scope))
        return _live(_decode_index(self.codec, scope, raw.values()))

    def drop(self, scope: str, links: list[HandedOut]) -> None:
        """Tombstone the sessions, then delete the cached links (the order `write` relies on)."""
        pipe = self.client.pipeline(transaction=False)
        for item in links:
            if item.session_id:
                ttl = item.expires_at - time.time() + TOMBSTONE_EXTRA_SECONDS
                pipe.set(_tombstone_key(scope, item.session_id), b"1", px=_ms(ttl))
        for item in links:
            if item.cache_key:
                pipe.delete(item.cache_key)
        self._call(pipe.execute)

    def forget(self, scope: str, links: list[HandedOut]) -> None:
        """Remove links from the user's index (revoked, or nothing left to revoke)."""
        if links:
            self._call(self.client.hdel, _index_key(scope), *(item.field for item in links))

    def lock(self, key: str, ttl_seconds: float) -> FetchLock:
        return _RedisFetchLock(self, f"{key}:lock", ttl_seconds)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except REDIS_FAILURES:
            return False

    def _call(self, func, *args, always: bool = False, **kwargs):
        """`func` with Redis errors as `StoreUnavailable`; skipped inside the retry interval unless `always` (the lock
        holder's writes and release: Redis answered its lock moments ago, and waiters elsewhere wait for them)."""
        if not always and time.monotonic() < self._down_until:
            raise StoreUnavailable()
        try:
            return func(*args, **kwargs)
        except REDIS_FAILURES as error:
            now = time.monotonic()
            if self._failed_at == 0.0 or now - self._failed_at > self.retry_interval + 5:
                log.warning("redis unavailable; serving without cache", extra={"error_type": type(error).__name__})
            self._failed_at = now
            # A refused write (out of memory, read-only replica) is answered at once and reads still work: only a Redis
            # that is gone, silent or failing (a timeout, CLUSTERDOWN) is skipped for the interval.
            if not isinstance(error, WRITES_REFUSED):
                self._down_until = now + self.retry_interval
            raise StoreUnavailable() from None


class _RedisFetchLock:
    """SET NX PX with an owner token, freed by compare-and-delete: what redis-py's `Lock` does, minus its blind spot.

    redis-py repeats a command that timed out; when the first SET NX did land, the repeat finds the key taken by our
    own token, which `Lock` takes for a rival's (and it has no documented way to free a token it did not set).
    """

    def __init__(self, store: RedisLinkStore, name: str, ttl_seconds: float):
        self._store, self._name, self._ttl_ms = store, name, _ms(ttl_seconds)
        self._token = secrets.token_hex(16).encode()
        self._held = False

    def acquire(self) -> bool:
        self._held = bool(self._store._call(self._acquire))
        return self._held

    def _acquire(self) -> bool:
        client = self._store.client
        return (
            bool(client.set(self._name, self._token, nx=True, px=self._ttl_ms)) or client.get(self._name) == self._token
        )

    def release(self) -> None:
        """Free the lock if it is still ours (it may have expired and been taken over)."""
        if self._held:
            self._held = False
            self._store._call(self._store.release_if_ours, keys=[self._name], args=[self._token], always=True)


def redis_client_from_url(url: str, timeout: float):
    """A client for `redis://`, `rediss://` (TLS), `unix://`, `redis+sentinel://` or `redis+cluster://` URLs.

    - `redis+sentinel://[:password@]host:port[,host:port...]/<master name>[/<db>]` follows the master through
      failovers (the same scheme the `limits` rate-limit storage understands).
    - `redis+cluster://[:password@]host:port[,host:port...]` talks to a Redis Cluster.
    """
    # Short timeouts and one immediate retry: redis-py's default retries with backoff would hang requests for seconds.
    common = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 1)}
    scheme = redis_scheme(url)
    if scheme not in NODE_SCHEMES:
        # READONLY: the node we are connected to was demoted. Close that connection and retry on a new one, which
        # reaches whatever now answers at the address (a DNS name or endpoint moved to the new master); else the pool
        # would keep talking to the replica forever. (Sentinel's own connections already do this.)
        return redis.Redis.from_url(url, health_check_interval=30, retry_on_error=[ReadOnlyError], **common)
    nodes, password, master, db = redis_nodes(url)
    if scheme == "redis+cluster":
        startup_nodes = [ClusterNode(host, port) for host, port in nodes]
        return RedisCluster(startup_nodes=startup_nodes, password=password, **common)
    sentinel = Sentinel(nodes, sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout})
    return sentinel.master_for(master, db=db, password=password, **common)


class MemoryLinkStore:
    """The same contract in one process: used when REDIS_URL is unset (demo, tests, single-process runs)."""

    name = "memory"
    MAX_ITEMS = 10_000

    def __init__(self) -> None:
        self._items: dict[str, tuple[object, float]] = {}
        self._mutex = threading.Lock()

    def read(self, key: str) -> Record | None:
        return self._get(key)  # type: ignore[return-value]

    def read_with_marker(self, key: str) -> tuple[Record | None, str | None]:
        return self.read(key), self._get(f"{key}:error")  # type: ignore[return-value]

    def write(self, key: str, link: Link, ttl_seconds: float) -> bool:
        scope = scope_of(key)
        with self._mutex:  # the same order as RedisLinkStore.write, made atomic by the mutex
            handed_out = HandedOut(link.session_id, key, link.expires_at, time.time())
            self._index_unlocked(scope)[handed_out.field] = handed_out
            if link.session_id and self._get_unlocked(_tombstone_key(scope, link.session_id)) is not None:
                return False
            self._set_unlocked(key, (link.url, link.expires_at), ttl_seconds)
        return True

    def write_marker(self, key: str, marker: str, ttl_seconds: float) -> None:
        self._set(f"{key}:error", marker, ttl_seconds)

    def remember(self, scope: str, handed_out: HandedOut) -> None:
        with self._mutex:
            self._index_unlocked(scope)[handed_out.field] = handed_out

    def handed_out(self, scope: str) -> list[HandedOut]:
        with self._mutex:
            return _live(list(self._index_unlocked(scope).values()))

    def drop(self, scope: str, links: list[HandedOut]) -> None:
        with self._mutex:
            for item in links:
                if item.session_id:
                    ttl = item.expires_at - time.time() + TOMBSTONE_EXTRA_SECONDS
                    self._set_unlocked(_tombstone_key(scope, item.session_id), True, ttl)
                if item.cache_key:
                    self._items.pop(item.cache_key, None)

    def forget(self, scope: str, links: list[HandedOut]) -> None:
        with self._mutex:
            index = self._index_unlocked(scope)
            for item in links:
                index.pop(item.field, None)

    def lock(self, key: str, ttl_seconds: float) -> FetchLock:
        return _MemoryFetchLock(self, f"{key}:lock", ttl_seconds)

    def ping(self) -> bool:
        return True

    def _get(self, key: str) -> object | None:
        with self._mutex:
            return self._get_unlocked(key)

    def _get_unlocked(self, key: str) -> object | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._items[key]
            return None
        return item[0]

    def _set(self, key: str, value: object, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        with self._mutex:
            return self._set_unlocked(key, value, ttl_seconds, only_if_absent)

    def _set_unlocked(self, key: str, value: object, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        now = time.monotonic()
        current = self._items.get(key)
        if only_if_absent and current is not None and current[1] > now:
            return False
        self._items[key] = (value, now + ttl_seconds)
        if len(self._items) > self.MAX_ITEMS:  # bound memory: drop expired entries
            self._items = {k: v for k, v in self._items.items() if v[1] > now}
        return True

    def _index_unlocked(self, scope: str) -> dict[str, HandedOut]:
        index = self._get_unlocked(_index_key(scope))
        if index is None:
            index = {}
            self._set_unlocked(_index_key(scope), index, INDEX_TTL_SECONDS)
        return index  # type: ignore[return-value]

    def _delete_if(self, key: str, value: object) -> None:
        with self._mutex:
            item = self._items.get(key)
            if item is not None and item[0] == value:
                del self._items[key]


class _MemoryFetchLock:
    def __init__(self, store: MemoryLinkStore, name: str, ttl_seconds: float):
        self._store, self._name, self._ttl = store, name, ttl_seconds
        self._token = secrets.token_hex(16)

    def acquire(self) -> bool:
        return self._store._set(self._name, self._token, self._ttl, only_if_absent=True)

    def release(self) -> None:
        self._store._delete_if(self._name, self._token)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _live(items: list[HandedOut]) -> list[HandedOut]:
    now = time.time()
    return sorted((item for item in items if item.expires_at > now), key=lambda item: item.created_at)


def _decode_index(codec: Codec, scope: str, values) -> list[HandedOut]:
    items = []
    for raw in values:
        try:
            items.append(HandedOut.from_json(codec.decode(raw), scope))
        except Exception:  # noqa: BLE001, S112 - an unreadable entry (old format, rotated-out key, another user's)
            continue
    return items
