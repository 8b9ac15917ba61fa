"""The transactional inbox: every event a provider pushed, stored once per (provider, event id)
in the transaction that precedes our 2xx, then applied by the processor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from roleferry.db import Base
from roleferry.users.models import utcnow

PENDING, APPLIED, FAILED = "pending", "applied", "failed"


@dataclass
class InboxEvent:
    """A stored event as the processor handles it: a plain record, not an ORM object, since
    ORM loading and per-object flushing cost more than applying a batch of events. A SendGrid
    event's payload holds only the fields its effects read (`effects.SENDGRID_FIELDS`)."""

    id: int
    provider: str
    event_id: str
    type: str
    occurred_at: float
    payload: dict[str, Any]
    status: str = PENDING
    outcome: str | None = None
    retry_at: float | None = None


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_webhook_events_status_id", "status", "id"),
        Index("ix_webhook_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[float] = mapped_column(Float, doc="The provider's event time, unix s.")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc="Times the processor tried it.")
    retry_at: Mapped[float | None] = mapped_column(
        Float, nullable=True, doc="A failing event waits until then (unix s) to be tried again."
    )
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True, doc="What applying did.")


EVENTS_TABLE: Table = WebhookEvent.__table__  # type: ignore[assignment]
