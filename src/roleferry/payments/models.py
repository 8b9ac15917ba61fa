"""Payments as Stripe reports them, and the credit ledger they feed exactly once.

The ledger is double-entry: a `CreditEntry` is one transaction (its unique `reference` makes
every operation idempotent) and its `CreditPosting`s, which sum to zero, move credits between
accounts (ledger.py names them). `CreditBalance` holds each user's available and reserved
credits, updated in the same transaction as the postings and never below zero (a CHECK and a
conditional update), so spending is checked without summing the postings.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from roleferry.db import Base
from roleferry.users.models import utcnow


class Payment(Base):
    """A payment as Stripe reports it. A checkout we created also keeps what its request
    was: the client's Idempotency-Key (hashed with its user), a hash of the body, and the
    session's URL, so a retried request is answered with the same session."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    status: Mapped[str] = mapped_column(String(24), default="open")
    amount: Mapped[int] = mapped_column(Integer, default=0)
    amount_refunded: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(8), default="usd")
    credits: Mapped[int] = mapped_column(Integer, default=0)
    pack: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failure: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(
        String(64), unique=True, index=True, nullable=True
    )
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkout_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CreditEntry(Base):
    """One ledger transaction; `reference` is unique, so an operation applies once. `delta` is
    its net change to the user's available credits (the postings say where it went)."""

    __tablename__ = "credit_ledger"
    __table_args__ = (UniqueConstraint("reference"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    delta: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CreditPosting(Base):
    """One leg of an entry: `amount` credits into `account` (negative: out of it)."""

    __tablename__ = "credit_postings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("credit_ledger.id", ondelete="CASCADE"), index=True
    )
    account: Mapped[str] = mapped_column(String(64), index=True)
    amount: Mapped[int] = mapped_column(Integer)


class CreditBalance(Base):
    """A user's credits now: the sum of the postings to their two accounts, kept in step."""

    __tablename__ = "credit_balances"
    __table_args__ = (
        CheckConstraint("available >= 0", name="ck_credit_balances_available"),
        CheckConstraint("reserved >= 0", name="ck_credit_balances_reserved"),
    )

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    available: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)


class CreditReservation(Base):
    """Credits held for a piece of work (a bulk job): `held` at the start, `used` as it spends,
    the rest released when it ends (`open` → `closed`)."""

    __tablename__ = "credit_reservations"
    __table_args__ = (UniqueConstraint("reference"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200))
    held: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
