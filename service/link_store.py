"""Where linking URLs are kept between requests: Redis in production, a dict for the demo and single processes.

Both stores offer the same small interface: read/write a `Link` under a key with a TTL, a lock per key with an owner
token (the cross-process half of single-flight), and a short-lived error marker so that waiters share a failure
instead of each repeating it against Ayrshare. The single-flight steps are one round trip each: `claim` tries the lock
and reads the record together, `peek` reads record, error marker and lock holder together. On a burst the process
leader makes those trips while a hundred other threads want the GIL, and each trip it saves is one wait in that queue
(BENCHMARKS.md, scenario 2).

Redis must never take the service down. Every Redis call has a short socket timeout and at most one immediate retry
(redis-py's default of ten retries with backoff would hang requests for seconds). Any Redis error raises
`StoreUnavailable`; after one, the store is skipped for `retry_interval` seconds, so a dead or paused Redis costs one
timeout per interval per process instead of one per request, and caching resumes by itself when Redis is back.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store cannot be used right now; callers go straight to Ayrshare."""


class Codec(Protocol):
    """Turns the stored record into bytes and back (identity, or encryption at rest)."""

    def encode(self, data: bytes) -> bytes: ...
    def decode(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class FlightState:
    """What a waiter sees in one look at the store: the record, the last holder's error marker, the lock's holder."""

    record: tuple[str, float] | None
    error_marker: str | None
    lock_holder: str | None


class PlainCodec:
    def encode(self, data: bytes) -> bytes:
        return data

    def decode(self, data: bytes) -> bytes:
        return data


# Connections are made while a burst grows a worker's pools, one per request in flight at the peak. By default redis-py
# announces itself on each (CLIENT SETINFO: two more round trips, which Redis before 7.2 refuses anyway) after reading
# its own version from the installed package metadata (0.6 ms): in a burst that put three waits for the GIL, behind a
# hundred other requests, before each new connection's first command (BENCHMARKS.md, scenario 3). The only loss:
# CLIENT LIST shows no lib-name/lib-ver for our connections.
LEAN_CONNECTIONS = {"driver_info": None}

# Per process. Sized above gevent's default 1,000 connections per worker: a full pool raises like an outage would,
# and would switch the cache off for the whole worker.
MAX_CONNECTIONS = 2048

# Compare-and-delete: only the holder that set the lock may release it; a late holder whose lock already expired
# and was taken over must not delete its successor's lock.
_UNLOCK_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisLinkStore:
    name = "redis"

    def __init__(self, client: redis.Redis, codec: Codec | None = None, retry_interval: float = 1.0):
        self.client = client
        self.codec = codec or PlainCodec()
        self.retry_interval = retry_interval
        self._down_until = 0.0
        self._unlock = client.register_script(_UNLOCK_SCRIPT)

    @classmethod
    def from_url(cls, url: str, timeout: float, codec: Codec | None = None) -> RedisLinkStore:
        return cls(redis_client_from_url(url, timeout), codec)

    # -- records ---------------------------------------------------------------------------------------------
    def read(self, key: str) -> tuple[str, float] | None:
        raw = self._call(self.client.get, key)
        return _decode_record(self.codec, raw)

    def write(self, key: str, url: str, expires_at: float, ttl_seconds: float, release: str = "") -> bool:
        """Store a link. With `release` (a lock token), free the fetch lock it holds in the same round trip: True when
        that was done (the caller frees the lock itself otherwise)."""
        payload = self.codec.encode(json.dumps({"u": url, "e": expires_at}).encode())
        px = max(1, int(ttl_seconds * 1000))
        if not release or isinstance(self.client, RedisCluster):
            # A cluster pipeline refuses EVALSHA, and would not keep the record's write ahead of the lock's release
            # across two nodes: there the lock is freed in a round trip of its own, after this one.
            self._call(self.client.set, key, payload, px=px)
            return False
        pipe = self._pipeline()
        pipe.set(key, payload, px=px)
        # The script by its hash, not through the Script object: in a pipeline that first asks Redis whether the script
        # exists, which is the round trip this saves. A Redis that lost its scripts answers NOSCRIPT.
        pipe.evalsha(self._unlock.sha, 1, f"{key}:lock", release)
        return self._call(self._finish_write, pipe, key, release)

    def _finish_write(self, pipe, key: str, release: str) -> bool:
        stored, freed = pipe.execute(raise_on_error=False)
        if isinstance(stored, Exception):
            raise stored
        if isinstance(freed, NoScriptError):
            try:
                freed = self._unlock(keys=[f"{key}:lock"], args=[release])  # loads the script, then runs it
            except redis.RedisError as error:
                freed = error
        # The link is stored either way; a failed release is left to the caller's own attempt, or the lock's TTL.
        return not isinstance(freed, Exception)

    # -- single-flight ---------------------------------------------------------------------------------------
    def claim(self, key: str, ttl_seconds: float) -> tuple[str | None, tuple[str, float] | None]:
        """Try for the fetch lock and read the record in one round trip: (our lock token or None, the record)."""
        token = secrets.token_hex(16)
        pipe = self._pipeline()
        pipe.set(f"{key}:lock", token, nx=True, px=int(ttl_seconds * 1000))
        pipe.get(key)
        acquired, raw = self._call(pipe.execute)
        return (token if acquired else None), _decode_record(self.codec, raw)

    def peek(self, key: str) -> FlightState:
        pipe = self._pipeline()
        for name in (key, f"{key}:error", f"{key}:lock"):
            pipe.get(name)
        raw, marker, holder = self._call(pipe.execute)
        return FlightState(
            _decode_record(self.codec, raw), marker.decode() if marker else None, holder.decode() if holder else None
        )

    def unlock(self, key: str, token: str) -> None:
        self._call(self._unlock, keys=[f"{key}:lock"], args=[token])

    def write_error(self, key: str, marker: str, ttl_seconds: float) -> None:
        self._call(self.client.set, f"{key}:error", marker, px=int(ttl_seconds * 1000))

    def _pipeline(self):
        # Not a transaction: the commands only need to share a round trip (and may live on different Cluster nodes).
        return self.client.pipeline(transaction=False)

    # -- health ----------------------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def _call(self, func, *args, **kwargs):
        if time.monotonic() < self._down_until:
            raise StoreUnavailable()
        try:
            return func(*args, **kwargs)
        except redis.RedisError as error:
            if self._down_until == 0.0 or time.monotonic() - self._down_until > 5:
                log.warning("redis unavailable; serving without cache", extra={"error_type": type(error).__name__})
            self._down_until = time.monotonic() + self.retry_interval
            raise StoreUnavailable() from None


def redis_client_from_url(url: str, timeout: float):
    """A client for `redis://`, `rediss://` (TLS), `unix://`, `redis+sentinel://` or `redis+cluster://` URLs.

    - `redis+sentinel://[:password@]host:port[,host:port...]/<master name>[/<db>]` follows the master through
      failovers (the same scheme the `limits` rate-limit storage understands).
    - `redis+cluster://[:password@]host:port[,host:port...]` talks to a Redis Cluster; every key we use is
      accessed on its own, so no cross-slot operation is needed.
    """
    common = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        **LEAN_CONNECTIONS,
    }
    scheme, _, rest = url.partition("://")
    if scheme not in ("redis+sentinel", "redis+cluster"):
        return redis.Redis.from_url(url, health_check_interval=30, max_connections=MAX_CONNECTIONS, **common)
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    nodes = [_host_port(node) for node in parts.netloc.rpartition("@")[2].split(",") if node]
    if scheme == "redis+cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            password=password,
            **common,
        )
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ValueError("redis+sentinel URL needs the master name: redis+sentinel://host:port/<master>")
    sentinel = Sentinel(nodes, sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout})
    db = int(path[1]) if len(path) > 1 else 0
    return sentinel.master_for(path[0], db=db, password=password, **common)


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return (host.strip("[]") or "localhost", int(port or 6379)) if host else (node, 6379)


class MemoryLinkStore:
    """The same contract in one process: used when REDIS_URL is unset (demo, tests, single-process runs)."""

    name = "memory"

    def __init__(self) -> None:
        self._items: dict[str, tuple[object, float]] = {}
        self._mutex = threading.Lock()

    def _get(self, key: str):
        with self._mutex:
            item = self._items.get(key)
            if item is None:
                return None
            value, dies_at = item
            if dies_at <= time.monotonic():
                del self._items[key]
                return None
            return value

    def _set(self, key: str, value: object, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        with self._mutex:
            current = self._items.get(key)
            if only_if_absent and current is not None and current[1] > time.monotonic():
                return False
            self._items[key] = (value, time.monotonic() + ttl_seconds)
            if len(self._items) > 10_000:  # bound memory: drop expired entries
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[1] > now}
            return True

    def read(self, key: str) -> tuple[str, float] | None:
        return self._get(key)  # type: ignore[return-value]

    def write(self, key: str, url: str, expires_at: float, ttl_seconds: float, release: str = "") -> bool:
        self._set(key, (url, expires_at), ttl_seconds)
        if release:
            self.unlock(key, release)
        return bool(release)

    def claim(self, key: str, ttl_seconds: float) -> tuple[str | None, tuple[str, float] | None]:
        token = secrets.token_hex(16)
        acquired = self._set(f"{key}:lock", token, ttl_seconds, only_if_absent=True)
        return (token if acquired else None), self.read(key)

    def peek(self, key: str) -> FlightState:
        return FlightState(self.read(key), self._get(f"{key}:error"), self._get(f"{key}:lock"))  # type: ignore[arg-type]

    def unlock(self, key: str, token: str) -> None:
        with self._mutex:
            item = self._items.get(f"{key}:lock")
            if item and item[0] == token:
                del self._items[f"{key}:lock"]

    def write_error(self, key: str, marker: str, ttl_seconds: float) -> None:
        self._set(f"{key}:error", marker, ttl_seconds)

    def ping(self) -> bool:
        return True


def _decode_record(codec: Codec, raw: bytes | None) -> tuple[str, float] | None:
    if raw is None:
        return None
    try:
        record = json.loads(codec.decode(raw))
        return str(record["u"]), float(record["e"])
    except Exception:  # noqa: BLE001 - an unreadable entry (old format, wrong key) is a miss, not an outage
        return None
