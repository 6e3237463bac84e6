"""`Directory`: the users and their Ayrshare profiles in the database, one short transaction per method.

Profile keys are stored only as Fernet tokens under `DATA_ENCRYPTION_KEY`. A `pending` row is a claim: it is written
before Ayrshare is asked to create a profile, so a second creation for the same user is impossible (the user id is the
primary key) and a crash in between leaves a row an operator can see (`flask profiles pending`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..crypto import FernetCodec
from ..errors import ServiceError
from .database import Database
from .models import UserRow


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UserRecord:
    """One user as the directory knows them; `profile_key` is None while their profile is being created."""

    user: str
    state: str
    source: str
    profile_key: str | None
    ref_id: str | None
    title: str | None
    created_at: datetime
    updated_at: datetime
    linked_networks: tuple[str, ...] | None
    linked_networks_checked_at: datetime | None
    lease_until: datetime | None
    pending_reason: str | None = None

    def in_flight(self, now: datetime | None = None) -> bool:
        """A pending claim whose holder may still be creating the profile right now."""
        return self.state == "pending" and self.pending_reason in (None, "creating") and not self.lease_expired(now)

    def lease_expired(self, now: datetime | None = None) -> bool:
        """A pending claim whose holder should have finished by now (crashed, or lost its answer)."""
        return self.state == "pending" and self.lease_until is not None and self.lease_until <= (now or utcnow())


@dataclass(frozen=True)
class Claim:
    """The right to create one user's profile, held until `lease_until`."""

    user: str
    claim_id: str
    title: str


class ClaimHeld(Exception):
    """Someone else holds (or held, then crashed) the claim on this user's profile."""

    def __init__(self, record: UserRecord):
        super().__init__("claim held")
        self.record = record


class Directory:
    """Reads and writes the `users` table; knows nothing of Flask or Ayrshare."""

    def __init__(self, database: Database, codec: FernetCodec, clock: Callable[[], datetime] = utcnow):
        self.database = database
        self.codec = codec
        self.clock = clock

    def get(self, user: str) -> UserRecord | None:
        with self.database.begin() as session:
            row = session.get(UserRow, user)
            return self._record(row) if row else None

    def profile_key(self, user: str) -> str | None:
        """The user's profile key, or None when they have none yet (unknown, or their profile is being created)."""
        with self.database.begin() as session:
            token = session.scalar(
                select(UserRow.profile_key_encrypted).where(UserRow.user_id == user, UserRow.state == "active")
            )
        return self._decrypt(token) if token else None

    def put(
        self,
        user: str,
        profile_key: str,
        source: str,
        ref_id: str | None = None,
        title: str | None = None,
        replace: bool = True,
    ) -> bool:
        """Attach a profile to the user: True when the user is new. A live claim is never replaced (`ClaimHeld`),
        and with `replace=False` neither is an active row (a late creation must not overwrite an attached key)."""
        now = self.clock()
        values = {
            "state": "active",
            "source": source,
            "profile_key_encrypted": self._encrypt(profile_key),
            "ref_id": ref_id,
            "title": title,
            "claim_id": None,
            "lease_until": None,
            "pending_reason": None,
            "linked_networks": None,
            "linked_networks_checked_at": None,
            "updated_at": now,
        }
        try:
            with self.database.begin() as session:
                row = session.get(UserRow, user, with_for_update=True)
                if row is None:
                    session.add(UserRow(user_id=user, created_at=now, **values))
                    return True
                record = self._record(row)
                if record.in_flight(now) or (not replace and record.state == "active"):
                    raise ClaimHeld(record)  # an operator may attach over a stuck claim, never a live one
                if record.profile_key == profile_key:  # the same profile: keep what we know of its networks
                    values.pop("linked_networks"), values.pop("linked_networks_checked_at")
                for name, value in values.items():
                    setattr(row, name, value)
                return False
        except IntegrityError:  # a claim was written between our read and our insert
            raise ClaimHeld(self.get(user) or _vanished(user, now)) from None

    def delete(self, user: str) -> UserRecord | None:
        """Forget the user; the row as it was, or None when there was none."""
        with self.database.begin() as session:
            row = session.get(UserRow, user, with_for_update=True)
            if row is None:
                return None
            record = self._record(row)
            session.delete(row)
        return record

    def page(self, limit: int, after: str | None = None) -> list[UserRecord]:
        """Up to `limit` users in id order, after the id `after` (keyset paging: stable while rows come and go)."""
        query = select(UserRow).order_by(UserRow.user_id).limit(limit)
        if after is not None:
            query = query.where(UserRow.user_id > after)
        with self.database.begin() as session:
            return [self._record(row) for row in session.scalars(query)]

    def pending(self) -> list[UserRecord]:
        """Every pending claim, oldest first (those past their lease need an operator: docs/profiles.md)."""
        query = select(UserRow).where(UserRow.state == "pending").order_by(UserRow.created_at)
        with self.database.begin() as session:
            return [self._record(row) for row in session.scalars(query)]

    # -- claims: exactly one profile creation per user --------------------------------------------------------
    def claim(self, user: str, title: str, lease_seconds: float) -> Claim:
        """Write the pending row that reserves the user's profile creation; `ClaimHeld` when a row exists."""
        now = self.clock()
        claim = Claim(user, secrets.token_hex(16), title)
        try:
            with self.database.begin() as session:
                session.add(
                    UserRow(
                        user_id=user,
                        state="pending",
                        source="auto",
                        title=title,
                        claim_id=claim.claim_id,
                        pending_reason="creating",
                        lease_until=now + timedelta(seconds=lease_seconds),
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            existing = self.get(user)
            if existing is None:  # deleted in between: the caller may simply try again
                raise ClaimHeld(_vanished(user, now)) from None
            raise ClaimHeld(existing) from None
        return claim

    def retitle(self, claim: Claim, title: str, lease_seconds: float) -> Claim:
        """Record the next title tried (after a duplicate title) before asking Ayrshare, so an orphan is findable;
        the lease starts over, as another call is about to be made."""
        now = self.clock()
        self._update_claim(claim, title=title, updated_at=now, lease_until=now + timedelta(seconds=lease_seconds))
        return Claim(claim.user, claim.claim_id, title)

    def complete(self, claim: Claim, profile_key: str, ref_id: str | None, title: str, source: str) -> None:
        """Store the key Ayrshare returned: the claim becomes the user's active row."""
        self._update_claim(
            claim,
            state="active",
            source=source,
            profile_key_encrypted=self._encrypt(profile_key),
            ref_id=ref_id,
            title=title,
            claim_id=None,
            lease_until=None,
            pending_reason=None,
            updated_at=self.clock(),
        )

    def mark_pending(self, claim: Claim, reason: str) -> None:
        """Say why the claim is still pending (shown by `flask profiles pending`)."""
        self._update_claim(claim, pending_reason=reason, updated_at=self.clock())

    def release(self, claim: Claim) -> None:
        """Remove a claim whose creation certainly did not happen (Ayrshare refused it, or it was never asked)."""
        with self.database.begin() as session:
            session.execute(
                delete(UserRow).where(
                    UserRow.user_id == claim.user, UserRow.state == "pending", UserRow.claim_id == claim.claim_id
                )
            )

    def release_pending(self, user: str) -> bool:
        """An operator's decision that a stale claim created nothing (or its profile was deleted): True if removed."""
        with self.database.begin() as session:
            result = session.execute(delete(UserRow).where(UserRow.user_id == user, UserRow.state == "pending"))
            return result.rowcount > 0

    def reencrypt(self) -> int:
        """Re-encrypt every stored key under DATA_ENCRYPTION_KEY's first key (the last step of a rotation)."""
        done = 0
        with self.database.begin() as session:
            stored = select(UserRow.user_id, UserRow.profile_key_encrypted).where(
                UserRow.profile_key_encrypted.is_not(None)
            )
            for user, token in session.execute(stored).all():
                try:
                    rotated = self.codec.rotate(token.encode()).decode()
                except ValueError:
                    raise KeyUnreadable() from None
                # Only the key read: one attached meanwhile was stored under the new key already, and must stay.
                done += session.execute(
                    update(UserRow)
                    .where(UserRow.user_id == user, UserRow.profile_key_encrypted == token)
                    .values(profile_key_encrypted=rotated)
                ).rowcount
        return done

    def set_networks(self, user: str, networks: tuple[str, ...], checked_at: datetime) -> None:
        with self.database.begin() as session:
            session.execute(
                update(UserRow)
                .where(UserRow.user_id == user, UserRow.state == "active")
                .values(linked_networks=list(networks), linked_networks_checked_at=checked_at)
            )

    # -- internals --------------------------------------------------------------------------------------------
    def _update_claim(self, claim: Claim, **values) -> None:
        with self.database.begin() as session:
            result = session.execute(
                update(UserRow)
                .where(UserRow.user_id == claim.user, UserRow.state == "pending", UserRow.claim_id == claim.claim_id)
                .values(**values)
            )
            if result.rowcount != 1:
                raise LostClaim()

    def _encrypt(self, profile_key: str) -> str:
        return self.codec.encode(profile_key.encode()).decode()

    def _decrypt(self, token: str) -> str:
        try:
            return self.codec.decode(token.encode()).decode()
        except ValueError:
            raise KeyUnreadable() from None

    def _record(self, row: UserRow) -> UserRecord:
        return UserRecord(
            user=row.user_id,
            state=row.state,
            source=row.source,
            profile_key=self._decrypt(row.profile_key_encrypted) if row.profile_key_encrypted else None,
            ref_id=row.ref_id,
            title=row.title,
            created_at=row.created_at,
            updated_at=row.updated_at,
            linked_networks=tuple(row.linked_networks) if row.linked_networks is not None else None,
            linked_networks_checked_at=row.linked_networks_checked_at,
            lease_until=row.lease_until,
            pending_reason=row.pending_reason,
        )


class KeyUnreadable(ServiceError):
    code = "profile_key_unreadable"
    message = (
        "A stored profile key cannot be decrypted: DATA_ENCRYPTION_KEY must still list the key it was stored with."
    )


class LostClaim(Exception):
    """The claim row is gone or changed hands (an operator released it): the result must not be stored over it."""


def _vanished(user: str, now: datetime) -> UserRecord:
    return UserRecord(user, "pending", "auto", None, None, None, now, now, None, None, now + timedelta(seconds=1))
