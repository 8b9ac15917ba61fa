"""Answers kept per user for a while, so the same question costs no second provider credit.
Stored in the database, so every process shares them. Writing one is a single upsert
(`INSERT … ON CONFLICT DO UPDATE`): two requests answering the same question at once both
succeed, the later answer kept."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, String, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from roleferry.db import Base, insert_for


class CacheEntry(Base):
    __tablename__ = "cache_entries"
    __table_args__ = (UniqueConstraint("user_id", "kind", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def get(session: AsyncSession, user_id: str, kind: str, key: str) -> dict[str, Any] | None:
    row = await session.scalar(
        select(CacheEntry).where(
            CacheEntry.user_id == user_id, CacheEntry.kind == kind, CacheEntry.key == key
        )
    )
    if row is None or _aware(row.expires_at) <= datetime.now(UTC):
        return None
    return row.value


async def put(
    session: AsyncSession,
    user_id: str,
    kind: str,
    key: str,
    value: dict[str, Any],
    ttl_s: int,
    *,
    commit: bool = True,
) -> None:
    if ttl_s <= 0:
        return
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    statement = insert_for(session, CacheEntry).values(
        user_id=user_id, kind=kind, key=key, value=value, expires_at=expires_at
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id", "kind", "key"],
            set_={"value": statement.excluded.value, "expires_at": statement.excluded.expires_at},
        )
    )
    if commit:
        await session.commit()
