"""Sent outreach messages and the addresses we must not write to again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String
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
