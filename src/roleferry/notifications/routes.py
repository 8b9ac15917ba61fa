"""In-app notifications, and the key that signs a user's callbacks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.api.times import UtcDateTime
from roleferry.errors import NotFound
from roleferry.notifications.callbacks import secret_for
from roleferry.notifications.models import Notification
from roleferry.users.models import utcnow

router = APIRouter(prefix="/api/v1", tags=["notifications"])


class NotificationOut(BaseModel):
    id: int
    kind: str
    title: str
    data: dict[str, Any]
    created_at: UtcDateTime
    read_at: UtcDateTime | None = Field(description="When you opened it; null while unread.")


class UnreadCount(BaseModel):
    unread: int


@router.get("/notifications")
async def notifications(user: CurrentUser, session: SessionDep) -> list[NotificationOut]:
    """Your last 100 notifications, newest first."""
    rows = await session.scalars(
        select(Notification)
        .where(Notification.user_id == user.id)
        .order_by(Notification.id.desc())
        .limit(100)
    )
    return [NotificationOut.model_validate(n, from_attributes=True) for n in rows]


@router.get("/notifications/unread-count")
async def unread_count(user: CurrentUser, session: SessionDep) -> UnreadCount:
    """How many of your notifications you have not opened: the console's bell."""
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user.id, Notification.read_at.is_(None))
    )
    return UnreadCount(unread=int(count or 0))


@router.post("/notifications/{notification_id}/read")
async def mark_read(
    notification_id: int, user: CurrentUser, runtime: RuntimeDep
) -> NotificationOut:
    """Marks one of your notifications read (again: no change)."""
    async with runtime.db.write_session() as session:
        row = await session.scalar(
            select(Notification).where(
                Notification.id == notification_id, Notification.user_id == user.id
            )
        )
        if row is None:
            raise NotFound(f"no notification {notification_id}")
        if row.read_at is None:
            row.read_at = utcnow()
        return NotificationOut.model_validate(row, from_attributes=True)


@router.get("/account/webhook-secret")
async def webhook_secret(user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    """The secret your callbacks are signed with (Standard Webhooks; verify with e.g. the
    `standardwebhooks` package)."""
    async with runtime.db.write_session() as session:
        return {"secret": await secret_for(session, user.id), "scheme": "standard-webhooks v1"}
