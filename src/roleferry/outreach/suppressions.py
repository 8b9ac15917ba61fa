"""Adding to the suppression lists: SendGrid's (global, synced or from events) and a user's own
blocklist (their blocks and one-click unsubscribes). Adding ends the matching enrolments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach import service
from roleferry.outreach.models import Enrollment, Suppression, UserBlock
from roleferry.users.models import utcnow


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def add(session: AsyncSession, emails: Iterable[str], reason: str, source: str) -> int:
    """Adds addresses to the global list (existing entries kept); returns how many were new."""
    rows = [
        {"email": e, "reason": reason, "source_event": source[:128], "created_at": utcnow()}
        for e in sorted({e.strip().lower() for e in emails if e})
    ]
    if not rows:
        return 0
    result = await session.execute(
        _insert(session, Suppression)
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(Suppression.email),
        rows,
    )
    return len(result.all())


async def block(session: AsyncSession, user_id: str, email: str, reason: str, now: float) -> int:
    """Adds one address to a user's blocklist at once and ends their active enrolments to it;
    returns how many enrolments ended."""
    email = email.strip().lower()
    await session.execute(
        _insert(session, UserBlock)
        .values(user_id=user_id, email=email, reason=reason, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["user_id", "email"])
    )
    ids = await session.scalars(
        select(Enrollment.id).where(
            Enrollment.user_id == user_id,
            Enrollment.email == email,
            Enrollment.status.in_(service.ACTIVE),
        )
    )
    return await service.end_enrollments(session, list(ids), reason, now)


async def barred(
    session: AsyncSession, recipients: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (user_id, email) pairs may not be mailed: on the global list or the user's own."""
    pairs = set(recipients)
    emails = {e for _, e in pairs}
    if not emails:
        return set()
    global_ = set(
        await session.scalars(select(Suppression.email).where(Suppression.email.in_(emails)))
    )
    own = set(
        (
            await session.execute(
                select(UserBlock.user_id, UserBlock.email).where(UserBlock.email.in_(emails))
            )
        ).all()
    )
    return {(u, e) for u, e in pairs if e in global_ or (u, e) in own}
