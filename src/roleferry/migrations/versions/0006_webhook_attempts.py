"""webhook events: when a failing event may be tried again

Revision ID: 0006_webhook_attempts
Revises: 0005_jobs_cancel_verification
Create Date: 2026-11-26 04:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_webhook_attempts"
down_revision: str | None = "0005_jobs_cancel_verification"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
