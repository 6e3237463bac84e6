"""Mutable emulator state shared by request threads: counters, request log, rate windows, links, sessions, emails,
User Profiles created or deleted at run time and the social accounts linked to each profile.

One lock guards everything. Nothing slow (sleeping, signing, key parsing) happens while it is held, so
hundreds of concurrent slow requests do not serialise on it.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace

from emulator.config import EmulatorConfig
from emulator.knobs import UNLIMITED, Knobs, merge_knobs

RATE_WINDOW_SECONDS = 300
REQUEST_LOG_SIZE = 50
# Bound on remembered redirect/allowedSocial entries so long benchmarks cannot grow memory without limit.
MAX_REMEMBERED_LINKS = 10_000
# Bound on remembered Link Sessions; the oldest is forgotten first (then its id is unknown: 404).
MAX_REMEMBERED_SESSIONS = 10_000
# Bound on recorded Connect Accounts emails; the oldest is forgotten first.
MAX_RECORDED_EMAILS = 1_000
# Title the emulator gives the Primary Profile in `GET /api/user` (the vendor's is the account's own name).
PRIMARY_PROFILE_TITLE = "Primary Profile"
# Key under which the Primary Profile's own linked accounts are kept; no header value can equal it.
PRIMARY_PROFILE = "\0primary"


@dataclass(frozen=True)
class LinkOptions:
    """What generateJWT remembered for the linking page of one token."""

    redirect: str | None
    allowed_social: tuple[str, ...]
    expires_at: float


@dataclass(frozen=True)
class LinkSession:
    """One Link Session as the emulator keeps it: its URL token only as a hash, its owner's API key only as a hash."""

    session_id: str
    token_hash: str
    owner: str  # token_fingerprint of the API key that created it
    profile_key: str
    created_at: float
    expires_at: float
    redirect: str | None
    allowed_social: tuple[str, ...]
    origin: str | None = None
    logout: bool = False
    revoked: bool = False
    use_count: int = 0
    first_used_at: float | None = None
    last_used_at: float | None = None

    def state(self, now: float) -> str:
        """The vendor's states: revoked stays revoked after expiry; an opened, unexpired session is active."""
        if self.revoked:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return "active" if self.use_count > 0 else "pending"


@dataclass(frozen=True)
class UserProfile:
    """A User Profile as the API sees it: created at run time, from the profiles file, or any key (no file)."""

    profile_key: str = field(repr=False)
    title: str
    ref_id: str
    created_at: float
    created_at_run_time: bool = False
    disabled_social: tuple[str, ...] = ()
    email: str | None = None


def default_ref_id(profile_key: str) -> str:
    """A stable refId for a profile the emulator did not create: 40 hex digits, the vendor's refId shape."""
    return hashlib.sha1(profile_key.encode("utf-8"), usedforsecurity=False).hexdigest()


def token_fingerprint(token: str) -> str:
    """Key for remembered link options; a hash so the state never holds a second copy of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class EmulatorState:
    """Thread-safe store behind the API, the linking page and the control endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._knobs = Knobs()
        self._started_at = time.time()  # "created" of profiles the emulator did not create itself
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._generate_calls = 0
        self._by_profile: dict[str, int] = {}
        self._faults_served = 0
        self._requests: deque[dict] = deque(maxlen=REQUEST_LOG_SIZE)
        self._connections: set[str] = set()  # "address:port" of each client connection generateJWT came over
        # profile -> (window start, requests in window); fixed windows, as the vendor's headers describe.
        self._rate_windows: dict[str, tuple[float, int]] = {}
        self._links: OrderedDict[str, LinkOptions] = OrderedDict()
        self._link_session_calls = 0
        self._session_connections: set[str] = set()
        self._link_session_reads = 0
        self._link_session_revokes = 0
        self._sessions: OrderedDict[str, LinkSession] = OrderedDict()  # session id -> session, oldest first
        self._session_ids_by_token: dict[str, str] = {}  # token hash -> session id
        self._emails: deque[dict] = deque(maxlen=MAX_RECORDED_EMAILS)
        self._profile_creates = 0
        self._profile_deletes = 0
        self._user_reads = 0
        self._social_unlinks = 0
        self._created: dict[str, UserProfile] = {}  # profile key -> profile created through POST /api/profiles
        self._deleted: set[str] = set()  # keys deleted through DELETE /api/profiles: refused everywhere afterwards
        # profile key (or PRIMARY_PROFILE) -> network -> its displayNames entry, in linking order
        self._linked: dict[str, dict[str, dict]] = {}

    @property
    def started_at(self) -> float:
        """When this emulator started: the `created` time of profiles it did not create itself."""
        return self._started_at

    # --- knobs -------------------------------------------------------------------------------------------
    @property
    def knobs(self) -> Knobs:
        with self._lock:
            return self._knobs

    def update_knobs(self, update: object) -> Knobs:
        with self._lock:
            self._knobs = merge_knobs(self._knobs, update)
            return self._knobs

    def take_fault(self, eligible: frozenset[str]) -> str | None:
        """Consume one armed fault if it belongs to `eligible`; return its name, else None."""
        with self._lock:
            knobs = self._knobs
            if knobs.fault not in eligible or knobs.fault_count == 0:
                return None
            if knobs.fault_count != UNLIMITED:
                remaining = knobs.fault_count - 1
                self._knobs = merge_knobs(knobs, {"fault_count": remaining})
                if remaining == 0:
                    self._knobs = merge_knobs(self._knobs, {"fault": None})
            self._faults_served += 1
            return knobs.fault

    def take_webhook_fault(self) -> str | None:
        """Consume one armed webhook delivery fault (knob `webhook_fault`); return its name, else None."""
        with self._lock:
            knobs = self._knobs
            if knobs.webhook_fault is None or knobs.webhook_fault_count == 0:
                return None
            if knobs.webhook_fault_count != UNLIMITED:
                remaining = knobs.webhook_fault_count - 1
                self._knobs = merge_knobs(knobs, {"webhook_fault_count": remaining})
                if remaining == 0:
                    self._knobs = merge_knobs(self._knobs, {"webhook_fault": None})
            return knobs.webhook_fault

    # --- statistics --------------------------------------------------------------------------------------
    def record_generate_call(self, entry: dict, *, connection: str) -> None:
        """Count one generateJWT request that reached the handler (and the connection it came over: a client that
        keeps its connections open makes fewer of them than calls), and keep it in the recent-request log."""
        with self._lock:
            self._generate_calls += 1
            self._connections.add(connection)
            self._log_create(entry)

    def record_link_session_call(self, entry: dict, *, connection: str) -> None:
        """Count one Link Session create that reached the handler, as record_generate_call does for generateJWT."""
        with self._lock:
            self._link_session_calls += 1
            self._session_connections.add(connection)
            self._log_create(entry)

    def _log_create(self, entry: dict) -> None:
        # Under the lock. by_profile counts the links asked for per profile, whichever endpoint minted them.
        profile_key = entry.get("profileKey")
        if isinstance(profile_key, str):
            self._by_profile[profile_key] = self._by_profile.get(profile_key, 0) + 1
        self._requests.append(entry)

    def record_link_session_read(self) -> None:
        with self._lock:
            self._link_session_reads += 1

    def record_link_session_revoke(self) -> None:
        with self._lock:
            self._link_session_revokes += 1

    def record_profile_call(self, counter: str) -> None:
        """Count one request to a Profiles endpoint: "profile_creates", "profile_deletes", "user_reads" or
        "social_unlinks"."""
        with self._lock:
            setattr(self, f"_{counter}", getattr(self, f"_{counter}") + 1)

    def stats(self) -> dict:
        with self._lock:
            return {
                "generate_calls": self._generate_calls,
                "generate_connections": len(self._connections),
                "link_session_calls": self._link_session_calls,
                "link_session_connections": len(self._session_connections),
                "link_session_reads": self._link_session_reads,
                "link_session_revokes": self._link_session_revokes,
                "profile_creates": self._profile_creates,
                "profile_deletes": self._profile_deletes,
                "user_reads": self._user_reads,
                "social_unlinks": self._social_unlinks,
                "by_profile": dict(self._by_profile),
                "faults_served": self._faults_served,
                "requests": copy.deepcopy(list(self._requests)),
            }

    # --- rate limiting -----------------------------------------------------------------------------------
    def count_request(self, profile: str, now: float | None = None) -> tuple[int, int]:
        """Count a request against `profile`'s window; return (count in window, current max)."""
        now = time.time() if now is None else now
        with self._lock:
            started, count = self._rate_windows.get(profile, (now, 0))
            if now - started >= RATE_WINDOW_SECONDS:
                started, count = now, 0
            count += 1
            self._rate_windows[profile] = (started, count)
            return count, self._knobs.rate_limit_max

    def peek_request_count(self, profile: str, now: float | None = None) -> tuple[int, int]:
        """Current (count, max) without counting; for answers that must not consume the profile's quota."""
        now = time.time() if now is None else now
        with self._lock:
            started, count = self._rate_windows.get(profile, (now, 0))
            if now - started >= RATE_WINDOW_SECONDS:
                count = 0
            return count, self._knobs.rate_limit_max

    # --- link options ------------------------------------------------------------------------------------
    def remember_link(self, token: str, options: LinkOptions) -> None:
        with self._lock:
            now = time.time()
            # Drop the oldest entries first: they expire first unless lifetimes differ a lot.
            while self._links and (
                len(self._links) >= MAX_REMEMBERED_LINKS or next(iter(self._links.values())).expires_at < now
            ):
                self._links.popitem(last=False)
            self._links[token_fingerprint(token)] = options

    def link_options(self, token: str) -> LinkOptions | None:
        with self._lock:
            return self._links.get(token_fingerprint(token))

    # --- link sessions -----------------------------------------------------------------------------------
    def remember_session(self, session: LinkSession) -> None:
        with self._lock:
            while len(self._sessions) >= MAX_REMEMBERED_SESSIONS:
                _, oldest = self._sessions.popitem(last=False)
                self._session_ids_by_token.pop(oldest.token_hash, None)
            self._sessions[session.session_id] = session
            self._session_ids_by_token[session.token_hash] = session.session_id

    def link_session(self, session_id: str, owner: str) -> LinkSession | None:
        """The session if it exists and belongs to `owner` (an API key fingerprint), else None."""
        with self._lock:
            session = self._sessions.get(session_id)
            return session if session is not None and session.owner == owner else None

    def revoke_session(self, session_id: str, owner: str) -> LinkSession | None:
        """Revoke `owner`'s session (again, if it already is); None when there is no such session."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner:
                return None
            session = replace(session, revoked=True)
            self._sessions[session_id] = session
            return session

    def open_session(self, token: str, now: float, count_use: bool = True) -> tuple[str, LinkSession | None]:
        """The linking page opening a session URL: ("invalid", None), ("revoked" | "expired", session) unchanged,
        or ("open", session) after counting the use (unless `count_use` is false: a button press on the open page)."""
        with self._lock:
            session_id = self._session_ids_by_token.get(token_fingerprint(token))
            session = self._sessions.get(session_id) if session_id else None
            if session is None:
                return "invalid", None
            state = session.state(now)
            if state in ("revoked", "expired") or not count_use:
                return (state if state in ("revoked", "expired") else "open"), session
            session = replace(
                session,
                use_count=session.use_count + 1,
                first_used_at=session.first_used_at if session.first_used_at is not None else now,
                last_used_at=now,
            )
            self._sessions[session.session_id] = session
            return "open", session

    # --- user profiles -----------------------------------------------------------------------------------
    def profile(self, config: EmulatorConfig, profile_key: str) -> UserProfile | None:
        """The profile a Profile-Key names, or None when it is unknown or was deleted (then it is refused)."""
        with self._lock:
            return self._profile(config, profile_key)

    def _profile(self, config: EmulatorConfig, profile_key: str) -> UserProfile | None:
        # Under the lock. API keys are never profile keys, even when any profile key is accepted.
        if profile_key in self._deleted or profile_key in config.api_keys:
            return None
        created = self._created.get(profile_key)
        if created is not None:
            return created
        title = config.profile_title(profile_key)
        if title is None:
            return None
        return UserProfile(profile_key, title, default_ref_id(profile_key), self._started_at)

    def profile_deleted(self, profile_key: str) -> bool:
        with self._lock:
            return profile_key in self._deleted

    def profile_title(self, config: EmulatorConfig, profile_key: str) -> str | None:
        """Title of a usable profile key, or None when the key is unknown or deleted."""
        profile = self.profile(config, profile_key)
        return profile.title if profile is not None else None

    def create_profile(self, config: EmulatorConfig, profile: UserProfile) -> bool:
        """Add a new profile; False (nothing added) when its title is already taken in the account."""
        with self._lock:
            taken = {created.title for created in self._created.values()}
            taken.update(title for key, title in (config.profiles or {}).items() if key not in self._deleted)
            if profile.title in taken:
                return False
            self._created[profile.profile_key] = profile
            return True

    def profile_by_title(self, config: EmulatorConfig, title: str) -> UserProfile | None:
        """The live profile with exactly this (case-sensitive) title, for a delete that names no key."""
        with self._lock:
            keys = [*self._created, *(config.profiles or {})]
            for key in keys:
                profile = self._profile(config, key)
                if profile is not None and profile.title == title:
                    return profile
            return None

    def delete_profile(self, config: EmulatorConfig, profile_key: str) -> UserProfile | None:
        """Delete a profile (and its linked accounts); None when the key is unknown or already deleted."""
        with self._lock:
            profile = self._profile(config, profile_key)
            if profile is None:
                return None
            self._created.pop(profile_key, None)
            self._deleted.add(profile_key)
            self._linked.pop(profile_key, None)
            return profile

    def created_profiles(self) -> list[dict]:
        """The profiles created at run time and not deleted, oldest first, without their keys."""
        with self._lock:
            return [
                {
                    "title": profile.title,
                    "refId": profile.ref_id,
                    "activeSocialAccounts": sorted(self._linked.get(key, {})),
                }
                for key, profile in self._created.items()
            ]

    def deleted_count(self) -> int:
        with self._lock:
            return len(self._deleted)

    # --- linked social accounts --------------------------------------------------------------------------
    def linked_accounts(self, owner: str) -> list[dict]:
        """The displayNames entries of `owner` (a profile key or PRIMARY_PROFILE), in linking order."""
        with self._lock:
            return copy.deepcopy(list(self._linked.get(owner, {}).values()))

    def link_account(self, owner: str, network: str, entry: dict) -> None:
        """Link (or re-link, replacing the old entry) one network; a profile has one connection per network."""
        with self._lock:
            accounts = self._linked.setdefault(owner, {})
            accounts.pop(network, None)
            accounts[network] = entry

    def unlink_account(self, owner: str, network: str) -> bool:
        """Unlink one network; False when it was not linked."""
        with self._lock:
            return self._linked.get(owner, {}).pop(network, None) is not None

    # --- emails ------------------------------------------------------------------------------------------
    def record_email(self, entry: dict) -> None:
        with self._lock:
            self._emails.append(entry)

    def emails(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self._emails))

    # --- reset -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget counters, the request log, rate windows, remembered links and sessions, emails, knobs, profiles
        created or deleted at run time and every linked account."""
        with self._lock:
            self._knobs = Knobs()
            self._reset_counters()
