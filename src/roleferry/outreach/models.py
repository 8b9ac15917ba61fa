"""Outreach: senders, sequences, enrolments and their sends, and the addresses we must not
write to again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from roleferry.db import Base
from roleferry.ids import new_id
from roleferry.users.models import utcnow


class OutreachMessage(Base):
    """One email to one recipient, as SendGrid accepted it; events move its state forward."""

    __tablename__ = "outreach_messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("out"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str | None] = mapped_column(String(64), index=True, doc="X-Message-Id")
    email: Mapped[str] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    spam_reported: Mapped[bool] = mapped_column(default=False)
    unsubscribed: Mapped[bool] = mapped_column(default=False)
    last_event_at: Mapped[float | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Suppression(Base):
    """An address that bounced, was dropped, reported spam or unsubscribed: sending skips it."""

    __tablename__ = "suppressions"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    source_event: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserBlock(Base):
    """An address one user must not write to: their blocklist, and one-click unsubscribes."""

    __tablename__ = "user_blocks"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sender(Base):
    """A from-address on a sending domain with its daily cap, warm-up ramp and pacing.
    `day`/`sent_today` count claims per calendar day in the sender's `timezone` (a cap is
    the sending mailbox's, so it resets at its owner's midnight, not at each recipient's);
    `next_free_at` holds the minimum gap."""

    __tablename__ = "senders"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("sdr"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    daily_cap: Mapped[int] = mapped_column(Integer)
    warmup_start: Mapped[int] = mapped_column(Integer)
    warmup_step: Mapped[int] = mapped_column(Integer)
    min_gap_s: Mapped[float] = mapped_column(Float)
    jitter_s: Mapped[float] = mapped_column(Float)
    paused: Mapped[bool] = mapped_column(default=False)
    paused_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    started_at: Mapped[float] = mapped_column(Float, doc="unix s; day 0 of the warm-up")
    day: Mapped[int] = mapped_column(Integer, default=0, doc="local day ordinal of sent_today")
    sent_today: Mapped[int] = mapped_column(Integer, default=0)
    next_free_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SequenceDef(Base):
    """Ordered steps ({delay_s, subject, body}), a send window, stop conditions."""

    __tablename__ = "sequences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("seq"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    sender_id: Mapped[str] = mapped_column(ForeignKey("senders.id", ondelete="CASCADE"))
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    window: Mapped[dict[str, Any]] = mapped_column(JSON)
    timezone: Mapped[str] = mapped_column(String(64))
    stop_on: Mapped[list[str]] = mapped_column(JSON)
    domain_hourly_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Enrollment(Base):
    """One contact in one sequence. `run_id` groups the enrolments of one request, so the
    user is told once when the whole run has finished."""

    __tablename__ = "enrollments"
    __table_args__ = (Index("ix_enrollments_user_status", "user_id", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("enr"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sequence_id: Mapped[str] = mapped_column(
        ForeignKey("sequences.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    email: Mapped[str] = mapped_column(String(320))
    contact: Mapped[dict[str, Any]] = mapped_column(JSON)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    waiting_for: Mapped[str | None] = mapped_column(
        String(16), nullable=True, doc="credits or draft: why an active enrolment's step waits"
    )
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SequenceSend(Base):
    """One step of one enrolment: the due-time table the dispatcher reads. Its id is the
    `send_id` in the mail's custom_args. `due_at` is null until the previous step is sent."""

    __tablename__ = "sequence_sends"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step"),
        Index("ix_sequence_sends_state_due", "state", "due_at"),
        Index("ix_sequence_sends_domain", "user_id", "domain", "claimed_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("snd"))
    enrollment_id: Mapped[str] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(32))
    sender_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(16), default="scheduled")
    due_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    draft_id: Mapped[str | None] = mapped_column(
        String(32), nullable=True, doc="the AI draft of this step's email, for an AI step"
    )
    draft_state: Mapped[str | None] = mapped_column(
        String(16), nullable=True, doc="AI steps: pending, ready or incomplete"
    )
    draft_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class TimelineEntry(Base):
    """What happened to an enrolment, in order: scheduled, sending, sent, delivery events,
    replied, stopped, with times."""

    __tablename__ = "enrollment_timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[str] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[float] = mapped_column(Float, doc="unix s")
    detail: Mapped[str | None] = mapped_column(String(500), nullable=True)


class SequenceRun(Base):
    """The enrolments of one request. `remaining` is decremented atomically as each one ends;
    the update that takes it to 0 notifies, so the user is told exactly once."""

    __tablename__ = "sequence_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("run"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sequence_id: Mapped[str] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    total: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
