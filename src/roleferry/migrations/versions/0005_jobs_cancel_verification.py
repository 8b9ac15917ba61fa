"""enrichment jobs: failure reason, verify_patterns, item verification, one item per line

Revision ID: 0005_jobs_cancel_verification
Revises: 0004
Create Date: 2026-11-26 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_jobs_cancel_verification"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrichment_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verify_patterns", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_enrichment_jobs_user_created", ["user_id", "created_at", "id"], unique=False
        )
    with op.batch_alter_table("enrichment_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verification", sa.String(length=16), nullable=True))
        batch_op.create_unique_constraint("uq_enrichment_items_job_line", ["job_id", "line"])


def downgrade() -> None:
    with op.batch_alter_table("enrichment_items", schema=None) as batch_op:
        batch_op.drop_constraint("uq_enrichment_items_job_line", type_="unique")
        batch_op.drop_column("verification")
    with op.batch_alter_table("enrichment_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_enrichment_jobs_user_created")
        batch_op.drop_column("reason")
        batch_op.drop_column("verify_patterns")
