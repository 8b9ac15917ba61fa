"""payments: the checkout request's Idempotency-Key, body hash and session URL

Revision ID: 0014_checkout_idempotency
Revises: 0013_sequence_drafts_credits
Create Date: 2026-11-26 07:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_checkout_idempotency"
down_revision: str | None = "0013_sequence_drafts_credits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("checkout_url", sa.Text(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_payments_idempotency_key"), ["idempotency_key"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_idempotency_key"))
        batch_op.drop_column("checkout_url")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("idempotency_key")
