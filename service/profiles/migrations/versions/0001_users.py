"""The directory of users: one row per user and their Ayrshare profile.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from service.profiles.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("profile_key_encrypted", sa.Text(), nullable=True),
        sa.Column("ref_id", sa.String(128), nullable=True),
        sa.Column("title", sa.String(255), nullable=True),
        sa.Column("claim_id", sa.String(32), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("pending_reason", sa.String(32), nullable=True),
        sa.Column("linked_networks", sa.JSON(), nullable=True),
        sa.Column("linked_networks_checked_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_users_ref_id", "users", ["ref_id"])


def downgrade() -> None:
    op.drop_index("ix_users_ref_id", table_name="users")
    op.drop_table("users")
