"""drafts: AI-written outreach emails, their partial text and the user's edit

Revision ID: 0011_drafts
Revises: 0010_pay_ledger
Create Date: 2026-11-26 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_drafts"
down_revision: str | None = "0010_pay_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("partial_text", sa.Text(), nullable=True),
        sa.Column("incomplete_reason", sa.String(length=32), nullable=True),
        sa.Column("edited_subject", sa.Text(), nullable=True),
        sa.Column("edited_body", sa.Text(), nullable=True),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drafts_user_created", "drafts", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_drafts_user_created", table_name="drafts")
    op.drop_table("drafts")
