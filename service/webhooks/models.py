"""The `webhook_events` table: every Ayrshare webhook accepted, and the outbox state of passing it on.

A row is written in the same transaction that applies the event to the directory, so an event the service has
acknowledged is never lost; `forward_state` says where its delivery to `WEBHOOK_FORWARD_URL` stands.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..profiles.models import Base, UTCDateTime


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the stable id the team's backend sees
    body_sha256: Mapped[str] = mapped_column(String(64), index=True)  # a retried delivery has the same body
    # body hash + the event it followed (for its profile and network): unique, so two copies never both get in
    dedupe_key: Mapped[str] = mapped_column(String(100), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str | None] = mapped_column(String(16))  # social: link | unlink | refresh
    network: Mapped[str | None] = mapped_column(String(32))
    ref_id: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    forward_state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed | none (not forwarded)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    give_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_webhook_events_due", "forward_state", "next_attempt_at"),
        # Each delivery's duplicate check reads its profile and network's latest event; the table is never pruned.
        Index("ix_webhook_events_latest", "ref_id", "network", "received_at", "id"),
    )
