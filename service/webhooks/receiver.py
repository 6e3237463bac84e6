"""`WebhookReceiver`: a signed Ayrshare delivery in, verified before it is parsed, recorded exactly once.

A `social` event updates the user's linked networks and is queued for the team's backend in the same transaction;
a delivery seen before (same body) is acknowledged and ignored, so Ayrshare's retries change nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError

from ..errors import BadRequest, Unauthenticated
from ..profiles.database import Database
from ..profiles.directory import utcnow
from ..profiles.models import UserRow
from .models import WebhookEvent
from .signature import BadSignature, verify

log = logging.getLogger(__name__)

SOCIAL_TYPES = ("link", "unlink", "refresh")
# Ayrshare retries a failed delivery after 5 s and 30 s with the same body. A social body carries no id or time, so a
# body is a duplicate only when it repeats the latest event of its profile and network, this recently: link, unlink,
# link again are three events; a `refresh` tomorrow is a new one.
DUPLICATE_WINDOW_SECONDS = 600


class WebhookRefused(Unauthenticated):
    code = "bad_webhook_signature"
    message = "The webhook's signature or timestamp does not verify with AYRSHARE_WEBHOOK_SECRET."


@dataclass(frozen=True)
class Receipt:
    """What the receiver did: "accepted", "duplicate", "unknown_ref_id" or "ignored" (another action)."""

    outcome: str
    event_id: str | None = None
    user: str | None = None


class WebhookReceiver:
    """`receive(body, headers)`; `on_accepted(user)` runs after the commit (drop the user's cached links, wake the
    deliverer); `on_outcome` hears every outcome and refusal reason (the metrics)."""

    def __init__(
        self,
        database: Database,
        secrets_: tuple[str, ...],
        tolerance_seconds: float,
        forward: bool,
        forward_max_hours: float,
        on_accepted: Callable[[str | None], None] = lambda user: None,
        on_outcome: Callable[[str], None] = lambda outcome: None,
    ):
        self.database = database
        self.secrets = secrets_
        self.tolerance = tolerance_seconds
        self.forward = forward
        self.forward_max_hours = forward_max_hours
        self.on_accepted = on_accepted
        self.on_outcome = on_outcome

    def receive(self, body: bytes, headers: Mapping[str, str]) -> Receipt:
        try:
            verify(body, headers, self.secrets, self.tolerance)
        except BadSignature as refused:
            self.on_outcome(refused.reason)
            log.warning("webhook refused", extra={"reason": refused.reason})
            raise WebhookRefused() from None
        event = _parse(body)
        if event.get("action") != "social":
            self.on_outcome("ignored")
            return Receipt("ignored")
        kind, network, ref_id = _social_fields(event)
        receipt = self._record(hashlib.sha256(body).hexdigest(), kind, network, ref_id)
        self.on_outcome(receipt.outcome)
        if receipt.outcome == "unknown_ref_id":
            log.info("webhook for an unknown refId", extra={"ref_id": ref_id, "event_type": kind})
        if receipt.outcome == "accepted":
            self.on_accepted(receipt.user)
        return receipt

    def _record(self, body_sha256: str, kind: str, network: str, ref_id: str) -> Receipt:
        now = utcnow()
        # Ids ordered by time to the millisecond: the deliveries list reads oldest first, and ids stay unguessable.
        event_id = f"evt_{int(now.timestamp() * 1000):012x}{secrets.token_hex(6)}"
        try:
            with self.database.begin() as session:
                latest = session.execute(latest_event(ref_id, network)).first()
                if (
                    latest is not None
                    and latest.body_sha256 == body_sha256
                    and latest.received_at > now - timedelta(seconds=DUPLICATE_WINDOW_SECONDS)
                ):
                    return Receipt("duplicate", latest.id)
                user = session.scalars(select(UserRow).where(UserRow.ref_id == ref_id).limit(1)).first()
                session.add(
                    WebhookEvent(
                        id=event_id,
                        body_sha256=body_sha256,
                        # Two copies arriving at once both see the same latest event: the unique key lets one in.
                        dedupe_key=f"{body_sha256}:{latest.id if latest else '-'}",
                        received_at=now,
                        action="social",
                        kind=kind,
                        network=network,
                        ref_id=ref_id,
                        user_id=user.user_id if user else None,
                        forward_state="pending" if self.forward and user else "none",
                        attempts=0,
                        next_attempt_at=now,
                        give_up_at=now + timedelta(hours=self.forward_max_hours),
                    )
                )
                if user is not None:
                    _apply(user, kind, network, now)
                outcome = "accepted" if user is not None else "unknown_ref_id"
                found = user.user_id if user else None
        except IntegrityError:
            return Receipt("duplicate")
        return Receipt(outcome, event_id, found)


def latest_event(ref_id: str, network: str) -> Select:
    """The last event received for a profile and network (read through the index ix_webhook_events_latest)."""
    return (
        select(WebhookEvent.id, WebhookEvent.body_sha256, WebhookEvent.received_at)
        .where(WebhookEvent.ref_id == ref_id, WebhookEvent.network == network)
        # Not by id alone: two ids from the same millisecond sort by their random part.
        .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
        .limit(1)
    )


def _apply(user: UserRow, kind: str, network: str, now) -> None:
    """A link or unlink changes the known networks; when none were known yet, the next read asks Ayrshare."""
    if kind == "refresh" or user.linked_networks is None:
        return
    networks = set(user.linked_networks)
    if kind == "link":
        networks.add(network)
    else:
        networks.discard(network)
    user.linked_networks = sorted(networks)
    user.linked_networks_checked_at = now


def _parse(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except ValueError:
        raise BadRequest("The webhook body is not JSON.", code="bad_webhook_body") from None
    if not isinstance(event, dict):
        raise BadRequest("The webhook body must be a JSON object.", code="bad_webhook_body")
    return event


def _social_fields(event: dict) -> tuple[str, str, str]:
    kind, network, ref_id = event.get("type"), event.get("platform"), event.get("refId")
    if kind not in SOCIAL_TYPES:
        raise BadRequest(f"A social webhook's type must be one of {', '.join(SOCIAL_TYPES)}.", code="bad_webhook_body")
    if not isinstance(network, str) or not network.isalnum() or len(network) > 32:
        raise BadRequest("A social webhook needs its platform.", code="bad_webhook_body")
    if not isinstance(ref_id, str) or not ref_id or len(ref_id) > 128:
        raise BadRequest("A social webhook needs the profile's refId.", code="bad_webhook_body")
    return kind, network.lower(), ref_id
