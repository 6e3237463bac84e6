"""`ProfileLookup`: which profile key is this user's, answered on the `/connect` hot path without a database trip.

The file (`PROFILE_KEYS_FILE`) wins for the users it lists; everyone else comes from the directory through a small
in-process cache. A change anywhere is announced on a Redis channel so every instance drops its copy at once; entries
also go stale after `FRESH_SECONDS` in case an announcement was missed, and a stale entry still answers while the
database is down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict

from .database import DatabaseDown
from .directory import Directory
from .json_file import JsonFileDirectory

log = logging.getLogger(__name__)

CHANNEL = "connect:directory:v1:changed"


class LookupCache:
    """A bounded LRU of user -> profile key with a freshness age, invalidated locally and through Redis pub/sub.

    fresh_seconds: how long an entry answers without asking the database.
    max_entries: the bound; the least recently used entry goes first.
    redis_client: where changes are announced and heard (None: this process only).
    """

    def __init__(self, fresh_seconds: float = 30.0, max_entries: int = 10_000, redis_client=None, listen=True):
        self.fresh_seconds = fresh_seconds
        self.max_entries = max_entries
        self.redis = redis_client
        self.listen = listen  # False under the Flask CLI: a command must not start a subscriber thread
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._listening_pid: int | None = None
        self._next_listen_try = 0.0
        self.version = 0  # bumped by every drop: a lookup that read the database before a change must not cache it

    def get(self, user: str, allow_stale: bool = False) -> str | None:
        self._listen()
        with self._lock:
            entry = self._entries.get(user)
            if entry is None:
                return None
            self._entries.move_to_end(user)
        key, stored_at = entry
        return key if allow_stale or time.monotonic() - stored_at < self.fresh_seconds else None

    def put(self, user: str, profile_key: str, version: int | None = None) -> None:
        with self._lock:
            if version is not None and version != self.version:
                return  # something changed while the database was read: the next lookup reads it again
            self._entries[user] = (profile_key, time.monotonic())
            self._entries.move_to_end(user)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, user: str) -> None:
        """Drop the user here and tell every other process (best effort: their entries go stale anyway)."""
        self._drop(user)
        if self.redis is not None:
            try:
                self.redis.publish(CHANNEL, user)
            except Exception:  # noqa: BLE001 - Redis down: other instances catch up within fresh_seconds
                log.warning("directory change not announced: redis unavailable")

    def clear(self) -> None:
        with self._lock:
            self.version += 1
            self._entries.clear()

    def _drop(self, user: str) -> None:
        with self._lock:
            self.version += 1
            self._entries.pop(user, None)

    def _listen(self) -> None:
        """Subscribe once per process (gunicorn forks workers after the app may have been built)."""
        if not self.listen or self.redis is None or self._listening_pid == os.getpid():
            return
        with self._lock:
            if self._listening_pid == os.getpid() or time.monotonic() < self._next_listen_try:
                return
            self._listening_pid = os.getpid()
        try:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(**{CHANNEL: self._heard})
            pubsub.run_in_thread(sleep_time=1.0, daemon=True, exception_handler=self._listener_failed)
        except Exception:  # noqa: BLE001 - without the channel, entries still go stale after fresh_seconds
            log.warning("directory changes not heard: redis unavailable; lookups refresh every %ss", self.fresh_seconds)
            self._listening_pid = None
            self._next_listen_try = time.monotonic() + self.fresh_seconds  # not on every lookup of the hot path

    def _heard(self, message: dict) -> None:
        user = message.get("data")
        if isinstance(user, bytes):
            self._drop(user.decode("utf-8", "replace"))

    def _listener_failed(self, error, pubsub, thread) -> None:
        # Announcements may have been missed while Redis was away: start over from the database.
        self.clear()
        time.sleep(1.0)


class ProfileLookup:
    """`lookup(user)` for `/connect`, the internal API and the demo; `changed(user)` after every write."""

    def __init__(self, directory: Directory, cache: LookupCache, file: JsonFileDirectory | None = None):
        self.directory = directory
        self.cache = cache
        self.file = file

    def lookup(self, user: str) -> str | None:
        if self.file is not None:
            key = self.file.lookup(user)
            if key is not None:
                return key
        key = self.cache.get(user)
        if key is not None:
            return key
        version = self.cache.version
        try:
            key = self.directory.profile_key(user)
        except DatabaseDown:
            stale = self.cache.get(user, allow_stale=True)
            if stale is not None:
                return stale  # a known user keeps working while the database is down
            raise
        if key is not None:
            self.cache.put(user, key, version)
        return key

    def from_file(self, user: str) -> bool:
        return self.file is not None and self.file.lookup(user) is not None

    def changed(self, user: str) -> None:
        self.cache.invalidate(user)

    def users(self, limit: int = 200) -> list[str]:
        """Users with a profile, for the demo page's picker (file first, then the directory)."""
        names = self.file.users() if self.file is not None else []
        with contextlib.suppress(DatabaseDown):
            names += [record.user for record in self.directory.page(limit) if record.state == "active"]
        return sorted(set(names))[:limit]
