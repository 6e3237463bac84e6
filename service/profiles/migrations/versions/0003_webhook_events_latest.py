"""An index for each webhook's duplicate check: the latest event of a profile and network.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_events_latest", "webhook_events", ["ref_id", "network", "received_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_latest", table_name="webhook_events")
