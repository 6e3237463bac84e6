"""`Outbox`: the accepted events still to be passed on, claimed by one deliverer at a time with a lease.

A deliverer claims a due row with a compare-and-set on its lease (the same statement on SQLite and PostgreSQL), so
two instances never send the same event at once; a deliverer that dies lets its lease run out and the event is sent
again (at-least-once, always with the same id).
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from ..profiles.database import Database
from ..profiles.directory import utcnow
from ..timefmt import iso_time
from .models import WebhookEvent

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 3600.0
EVENT_TYPES = {"link": "account.linked", "unlink": "account.unlinked", "refresh": "account.refresh_needed"}


@dataclass(frozen=True)
class Delivery:
    """One event as the team's backend receives it, and how its delivery stands."""

    id: str
    type: str
    user: str | None
    network: str | None
    occurred_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None

    def payload(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "user": self.user,
            "network": self.network,
            "occurredAt": iso_time(self.occurred_at),
        }

    def as_json(self) -> dict:
        """What the internal API shows (the payload and its delivery state; nothing secret)."""
        return {
            **self.payload(),
            "state": self.state,
            "attempts": self.attempts,
            "nextAttemptAt": iso_time(self.next_attempt_at),
            "lastError": self.last_error,
            "deliveredAt": iso_time(self.delivered_at),
        }


class Outbox:
    """Claim, settle, list and retry deliveries; `max_hours` is how long an event is retried before it fails."""

    def __init__(self, database: Database, max_hours: float, clock=utcnow):
        self.database = database
        self.max_hours = max_hours
        self.clock = clock

    def claim_due(self, limit: int = 10, lease_seconds: float = 300.0) -> tuple[str, list[Delivery]]:
        """(our lease owner id, the due deliveries we now hold)."""
        owner = secrets.token_hex(8)
        now = self.clock()
        with self.database.begin() as session:
            due = session.scalars(
                select(WebhookEvent.id)
                .where(WebhookEvent.forward_state == "pending", WebhookEvent.next_attempt_at <= now)
                .where(or_(WebhookEvent.lease_until.is_(None), WebhookEvent.lease_until < now))
                .order_by(WebhookEvent.next_attempt_at)
                .limit(limit)
            ).all()
        held = []
        for event_id in due:
            with self.database.begin() as session:
                claimed = session.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id == event_id, WebhookEvent.forward_state == "pending")
                    .where(or_(WebhookEvent.lease_until.is_(None), WebhookEvent.lease_until < now))
                    .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
                ).rowcount
                if claimed == 1:
                    held.append(_delivery(session.get(WebhookEvent, event_id)))
        return owner, held

    def delivered(self, event_id: str, owner: str) -> None:
        self._settle(event_id, owner, forward_state="delivered", delivered_at=self.clock(), last_error=None)

    def attempt_failed(self, event_id: str, owner: str, error: str) -> str:
        """Schedule the next attempt with exponential backoff, or fail the event past its deadline: the new state."""
        now = self.clock()
        with self.database.begin() as session:
            row = session.get(WebhookEvent, event_id)
            if row is None or row.lease_owner != owner:
                return "lost"
            row.attempts += 1
            wait = min(FIRST_RETRY_SECONDS * 2 ** (row.attempts - 1), MAX_RETRY_SECONDS) * random.uniform(1.0, 1.2)
            row.next_attempt_at = now + timedelta(seconds=wait)
            row.forward_state = "failed" if row.next_attempt_at > row.give_up_at else "pending"
            row.last_error, row.lease_owner, row.lease_until = error[:200], None, None
            return row.forward_state

    def list(self, state: str | None, limit: int, after: str | None = None) -> list[Delivery]:
        query = select(WebhookEvent).where(WebhookEvent.forward_state != "none").order_by(WebhookEvent.id).limit(limit)
        if state:
            query = query.where(WebhookEvent.forward_state == state)
        if after:
            query = query.where(WebhookEvent.id > after)
        with self.database.begin() as session:
            return [_delivery(row) for row in session.scalars(query)]

    def get(self, event_id: str) -> Delivery | None:
        with self.database.begin() as session:
            row = session.get(WebhookEvent, event_id)
            return _delivery(row) if row is not None and row.forward_state != "none" else None

    def retry(self, event_id: str) -> Delivery | None:
        """Send the event again now, with a fresh `max_hours` of retries (a delivered one is sent once more)."""
        now = self.clock()
        with self.database.begin() as session:
            row = session.get(WebhookEvent, event_id)
            if row is None or row.forward_state == "none":
                return None
            row.forward_state, row.next_attempt_at = "pending", now
            row.give_up_at = now + timedelta(hours=self.max_hours)
            if row.lease_until is None or row.lease_until < now:  # never take an event from a sender mid-send
                row.lease_owner = row.lease_until = None
            return _delivery(row)

    def release(self, event_id: str, owner: str) -> None:
        """Give the event back unsent (its holder is going away): it is due again at once."""
        self._settle(event_id, owner)

    def _settle(self, event_id: str, owner: str, **values) -> None:
        with self.database.begin() as session:
            session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id, WebhookEvent.lease_owner == owner)
                .values(lease_owner=None, lease_until=None, **values)
            )


def _delivery(row: WebhookEvent) -> Delivery:
    return Delivery(
        id=row.id,
        type=EVENT_TYPES.get(row.kind or "", f"ayrshare.{row.action}"),
        user=row.user_id,
        network=row.network,
        occurred_at=row.received_at,
        state=row.forward_state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )
