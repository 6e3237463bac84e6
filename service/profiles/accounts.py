"""`UserAccounts`: which networks a user has linked, read from Ayrshare's `GET /api/user` and kept in the directory.

A reading younger than `ACCOUNTS_CACHE_SECONDS` is answered from the directory; an older one is refreshed by one
caller at a time (a lock in the link store), so a burst of "Done" clicks costs one Ayrshare call.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime

from ..errors import StoreUnavailable, UnknownUser
from ..upstream import AyrshareClient
from .directory import Directory, utcnow
from .lookup import ProfileLookup

WAIT_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class AccountsReading:
    """The networks a user had linked when Ayrshare was last asked, and when that was."""

    networks: tuple[str, ...]
    checked_at: datetime


class UserAccounts:
    """`read(user)`, `unlink(user, network)`; the store gives the lock, the breaker guards the Ayrshare calls."""

    def __init__(
        self,
        directory: Directory,
        lookup: ProfileLookup,
        client: AyrshareClient,
        store,
        cache_seconds: int,
        lock_seconds: float,
        breaker=None,
    ):
        self.directory, self.lookup, self.client, self.store = directory, lookup, client, store
        self.cache_seconds, self.lock_seconds, self.breaker = cache_seconds, lock_seconds, breaker

    def read(self, user: str) -> AccountsReading:
        """The user's linked networks, at most `cache_seconds` old."""
        if self.lookup.from_file(user):  # a file user has no row to keep the reading in
            return self._fetch(user, self.lookup.lookup(user), store=False)
        record = self._active(user)
        if self._fresh(record):
            return _accounts_of(record)
        lock = self.store.lock(f"connect:accounts:v1:{_digest(user)}", self.lock_seconds)
        try:
            locked = self._acquire(lock, user)
        except StoreUnavailable:
            return self._fetch(user, record.profile_key)  # no single-flight while Redis is down
        if isinstance(locked, AccountsReading):
            return locked  # someone else's reading arrived while we waited
        try:
            record = self._active(user)
            return _accounts_of(record) if self._fresh(record) else self._fetch(user, record.profile_key)
        finally:
            if locked:
                with contextlib.suppress(StoreUnavailable):  # the lock expires by itself; the reading stands
                    lock.release()

    def unlink(self, user: str, network: str) -> AccountsReading:
        """Unlink one network at Ayrshare, then read what is left."""
        profile_key = self.lookup.lookup(user)
        if profile_key is None:
            raise UnknownUser()
        self._guarded(lambda: self.client.unlink_network(profile_key, network))
        return self._fetch(user, profile_key, store=not self.lookup.from_file(user))

    def _fetch(self, user: str, profile_key: str | None, store: bool = True) -> AccountsReading:
        if profile_key is None:
            raise UnknownUser()
        linked = self._guarded(lambda: self.client.linked_accounts(profile_key))
        accounts = AccountsReading(tuple(linked.networks), utcnow())
        if store:
            self.directory.set_networks(user, accounts.networks, accounts.checked_at)
        return accounts

    def _acquire(self, lock, user: str) -> bool | AccountsReading:
        """True with the lock; a fresh reading if one arrived while waiting; False when the wait ran out."""
        deadline = time.monotonic() + self.lock_seconds
        while not lock.acquire():
            if time.monotonic() > deadline:
                return False
            time.sleep(WAIT_POLL_SECONDS)
            record = self._active(user)
            if self._fresh(record):
                return _accounts_of(record)
        return True

    def _active(self, user: str):
        record = self.directory.get(user)
        if record is None or record.state != "active":
            raise UnknownUser()
        return record

    def _fresh(self, record) -> bool:
        checked = record.linked_networks_checked_at
        return checked is not None and (utcnow() - checked).total_seconds() < self.cache_seconds

    def _guarded(self, call):
        return self.breaker.call(call) if self.breaker else call()


def _accounts_of(record) -> AccountsReading:
    return AccountsReading(record.linked_networks, record.linked_networks_checked_at)


def _digest(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()[:32]
