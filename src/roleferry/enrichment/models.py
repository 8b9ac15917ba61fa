"""Bulk enrichment jobs and their contacts, saved as each one completes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
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

JOB_STATES = ("queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "partially_succeeded", "failed", "cancelled")
ITEM_STATES = ("pending", "found", "not_found", "failed", "cancelled")
ITEM_FINAL = ("found", "not_found", "failed", "cancelled")
VERIFICATIONS = ("verified", "pattern", "unverified")


class EnrichmentJob(Base):
    """`reason` says why a job failed as a whole; `verify_patterns` asks Hunter's verifier
    about every address guessed from a domain's pattern."""

    __tablename__ = "enrichment_jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("ix_enrichment_jobs_user_created", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("job"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(24), default="queued")
    total: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    verify_patterns: Mapped[bool] = mapped_column(Boolean, default=False)
    max_wait_s: Mapped[float | None] = mapped_column(
        Float, nullable=True, doc="s a contact may wait for a provider; None: the default"
    )
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True, doc="unix s")
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True, doc="unix s")


class EnrichmentItem(Base):
    """One contact of a job. `attempts` and `next_attempt_at` carry transient failures'
    backoff; `duplicate_of` points at the item whose answer this one shares."""

    __tablename__ = "enrichment_items"
    __table_args__ = (
        Index("ix_enrichment_items_job_status", "job_id", "status"),
        UniqueConstraint("job_id", "line", name="uq_enrichment_items_job_line"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("enrichment_jobs.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(253))
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    linkedin_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    confidence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    email_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verification: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    tried: Mapped[str] = mapped_column(String(64), default="", doc="Providers that answered.")
    provider_calls: Mapped[int] = mapped_column(Integer, default=0)
    duplicate_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
