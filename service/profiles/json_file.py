"""`PROFILE_KEYS_FILE`: the team's user ids and their Ayrshare Profile Keys in a JSON file, re-read when it changes
(checked at most every few seconds), so operators can add users without a restart."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Protocol

from ..config import ConfigError


class ProfileDirectory(Protocol):
    """What the rest of the service needs from a directory of users."""

    def lookup(self, user: str) -> str | None: ...

    def users(self) -> list[str]: ...


class JsonFileDirectory:
    """`PROFILE_KEYS_FILE`: a JSON object `{"<user>": "<profile key>", ...}`."""

    recheck_seconds = 5.0

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._profiles, self._mtime = self._read()
        self._checked_at = time.monotonic()

    def lookup(self, user: str) -> str | None:
        self._reload_if_changed()
        return self._profiles.get(user)

    def users(self) -> list[str]:
        """The configured user ids, sorted (the demo page's user picker lists them)."""
        self._reload_if_changed()
        return sorted(self._profiles)

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.recheck_seconds:
            return
        with self._lock:
            self._checked_at = now
            try:
                if os.stat(self.path).st_mtime_ns == self._mtime:
                    return
                self._profiles, self._mtime = self._read()
            except (OSError, ConfigError):
                # A half-written or removed file must not empty the directory of a running service.
                return

    def _read(self) -> tuple[dict[str, str], int]:
        try:
            mtime = os.stat(self.path).st_mtime_ns
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as error:
            raise ConfigError(f"PROFILE_KEYS_FILE: cannot read the file ({type(error).__name__})") from None
        except ValueError:
            raise ConfigError("PROFILE_KEYS_FILE: not valid JSON") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
        ):
            raise ConfigError('PROFILE_KEYS_FILE: must be a JSON object {"<user>": "<profile key>", ...}')
        return data, mtime
