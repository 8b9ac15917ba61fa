"""enrichment jobs: how long a contact may wait for an unavailable provider

Revision ID: 0009_job_max_wait
Revises: 0008_executor_heartbeats
Create Date: 2026-11-26 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_job_max_wait"
down_revision: str | None = "0008_executor_heartbeats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrichment_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_wait_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrichment_jobs", schema=None) as batch_op:
        batch_op.drop_column("max_wait_s")
