"""double-entry credit ledger: postings, balances, reservations; payment pack and failure

Revision ID: 0010_pay_ledger
Revises: 0009_job_max_wait
Create Date: 2026-11-26 05:40:00

Entries written before the ledger was double-entry get their two postings here (the user's
available credits and the house account of their reason), and each user's balance row the sum.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_pay_ledger"
down_revision: str | None = "0009_job_max_wait"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOUSE = {"purchase": "purchases", "refund": "refunds", "grant": "grants"}


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pack", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("failure", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            )
        )
    op.create_table(
        "credit_postings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["credit_ledger.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("credit_postings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_postings_entry_id"), ["entry_id"])
        batch_op.create_index(batch_op.f("ix_credit_postings_account"), ["account"])
    op.create_table(
        "credit_balances",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.CheckConstraint("available >= 0", name="ck_credit_balances_available"),
        sa.CheckConstraint("reserved >= 0", name="ck_credit_balances_reserved"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_reservations_user_id"), ["user_id"])
    _backfill()


def _backfill() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, user_id, delta, reason FROM credit_ledger")).all()
    totals: dict[str, int] = {}
    for entry_id, user_id, delta, reason in rows:
        if not delta:
            continue
        for account, amount in (
            (f"user:{user_id}:available", delta),
            (HOUSE.get(reason, "grants"), -delta),
        ):
            bind.execute(
                sa.text(
                    "INSERT INTO credit_postings (entry_id, account, amount) VALUES (:e, :a, :n)"
                ),
                {"e": entry_id, "a": account, "n": amount},
            )
        totals[user_id] = totals.get(user_id, 0) + delta
    for user_id, total in totals.items():
        if total < 0:
            # The old ledger debited refunds unchecked: the shortfall is written off by a
            # grant, so the balance starts at zero, never below, and still sums its postings.
            entry_id = bind.execute(
                sa.text(
                    "INSERT INTO credit_ledger (user_id, delta, reason, reference, created_at) "
                    "VALUES (:u, :n, 'grant', :r, CURRENT_TIMESTAMP) RETURNING id"
                ),
                {"u": user_id, "n": -total, "r": f"writeoff:{user_id}"},
            ).scalar_one()
            for account, amount in ((f"user:{user_id}:available", -total), ("grants", total)):
                bind.execute(
                    sa.text(
                        "INSERT INTO credit_postings (entry_id, account, amount) "
                        "VALUES (:e, :a, :n)"
                    ),
                    {"e": entry_id, "a": account, "n": amount},
                )
            total = 0
        bind.execute(
            sa.text(
                "INSERT INTO credit_balances (user_id, available, reserved) VALUES (:u, :n, 0)"
            ),
            {"u": user_id, "n": total},
        )


def downgrade() -> None:
    op.drop_table("credit_reservations")
    op.drop_table("credit_balances")
    with op.batch_alter_table("credit_postings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_postings_account"))
        batch_op.drop_index(batch_op.f("ix_credit_postings_entry_id"))
    op.drop_table("credit_postings")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("created_at")
        batch_op.drop_column("failure")
        batch_op.drop_column("pack")
