"""The directory's tables: one row per user (`UserRow`), written through `Directory`, and by `WebhookReceiver`,
which updates `linked_networks` in the transaction that records the event.

A row is `active` (it holds an encrypted profile key) or `pending` (a claim: this service is creating the user's
profile at Ayrshare right now, or was when it crashed; see docs/profiles.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # "active" | "pending"
    source: Mapped[str] = mapped_column(String(8))  # "file" | "api" | "auto"
    profile_key_encrypted: Mapped[str | None] = mapped_column(Text)  # a Fernet token under DATA_ENCRYPTION_KEY
    ref_id: Mapped[str | None] = mapped_column(String(128), index=True)
    title: Mapped[str | None] = mapped_column(String(255))
    claim_id: Mapped[str | None] = mapped_column(String(32))  # which request holds a pending claim
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Why a claim is still pending: "creating", "outcome_unknown" (Ayrshare's answer was lost) or "not_stored".
    pending_reason: Mapped[str | None] = mapped_column(String(32))
    linked_networks: Mapped[list | None] = mapped_column(JSON)
    linked_networks_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
