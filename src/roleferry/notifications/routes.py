"""In-app notifications, and the key that signs a user's callbacks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.api.times import UtcDateTime
from roleferry.notifications.callbacks import secret_for
from roleferry.notifications.models import Notification

router = APIRouter(prefix="/api/v1", tags=["notifications"])


class NotificationOut(BaseModel):
    id: int
    kind: str
    title: str
    data: dict[str, Any]
    created_at: UtcDateTime


@router.get("/notifications")
async def notifications(user: CurrentUser, session: SessionDep) -> list[NotificationOut]:
    rows = await session.scalars(
        select(Notification)
        .where(Notification.user_id == user.id)
        .order_by(Notification.id.desc())
        .limit(100)
    )
    return [NotificationOut.model_validate(n, from_attributes=True) for n in rows]


@router.get("/account/webhook-secret")
async def webhook_secret(user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    """The secret your callbacks are signed with (Standard Webhooks; verify with e.g. the
    `standardwebhooks` package)."""
    async with runtime.db.write_session() as session:
        return {"secret": await secret_for(session, user.id), "scheme": "standard-webhooks v1"}
