"""executor heartbeats: which processes run durable work, and since when they are silent

Revision ID: 0008_executor_heartbeats
Revises: 0007_notifications_read_at
Create Date: 2026-11-26 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_executor_heartbeats"
down_revision: str | None = "0007_notifications_read_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "executor_heartbeats",
        sa.Column("executor_id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("executor_id"),
    )
    op.create_index(
        "ix_executor_heartbeats_last_seen", "executor_heartbeats", ["last_seen"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_executor_heartbeats_last_seen", table_name="executor_heartbeats")
    op.drop_table("executor_heartbeats")
