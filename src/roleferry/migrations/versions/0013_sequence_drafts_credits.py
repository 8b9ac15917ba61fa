"""sequences: a sender's time zone for its daily cap, AI-drafted steps, waiting enrolments

Revision ID: 0013_sequence_drafts_credits
Revises: 0012_sequences
Create Date: 2026-11-26 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_sequence_drafts_credits"
down_revision: str | None = "0012_sequences"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("senders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False)
        )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting_for", sa.String(length=16), nullable=True))
    with op.batch_alter_table("sequence_sends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("draft_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("draft_state", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("draft_attempts", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sequence_sends", schema=None) as batch_op:
        batch_op.drop_column("draft_attempts")
        batch_op.drop_column("draft_state")
        batch_op.drop_column("draft_id")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("waiting_for")
    with op.batch_alter_table("senders", schema=None) as batch_op:
        batch_op.drop_column("timezone")
