"""Credits for bulk enrichment jobs: a job holds its maximum (one found email per contact) when
it starts, and settles to what it found when it ends, releasing the rest.

Without the credits the job does not fail: its pending contacts wait with the reason (the
job's `waiting_for` shows it), and the workflow asks again every `ROLEFERRY_CREDITS_RETRY_S`, so
it resumes on its own after a purchase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from roleferry.enrichment.models import EnrichmentItem, EnrichmentJob
from roleferry.payments.credits import Credits, PaymentRequired
from roleferry.payments.models import CreditReservation

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

KIND = "email_found"
WAITING = "waiting for credits: "


def _reference(job_id: str) -> str:
    return f"job:{job_id}"


async def hold(runtime: Runtime, job_id: str) -> tuple[float, str | None]:
    """(0, owner) once the job's credits are held (or cost nothing); else the seconds until
    it asks again, its pending contacts marked as waiting for credits."""
    settings = runtime.settings
    async with runtime.db.write_session() as session:
        job = await session.get(EnrichmentJob, job_id)
        if job is None or job.status != "running":
            return 0.0, job.user_id if job else None
        user_id, total = job.user_id, job.total
    try:
        async with runtime.db.write_session() as session:
            await Credits(session, settings).reserve(user_id, KIND, total, _reference(job_id))
            await session.execute(
                update(EnrichmentItem)
                .where(
                    EnrichmentItem.job_id == job_id,
                    EnrichmentItem.status == "pending",
                    EnrichmentItem.reason.like(f"{WAITING}%"),
                )
                .values(next_attempt_at=0.0, reason=None)
            )
        return 0.0, user_id
    except PaymentRequired as exc:
        wait = settings.credits_retry_s
        async with runtime.db.write_session() as session:
            await session.execute(
                update(EnrichmentItem)
                .where(EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending")
                .values(
                    source=None,
                    next_attempt_at=runtime.clock() + wait,
                    reason=f"{WAITING}{exc.message}"[:1000],
                )
            )
        return wait, user_id


async def settle(runtime: Runtime, job_id: str) -> int:
    """Spends one price per email found (not guessed) out of the job's hold and releases the
    rest; returns the credits spent."""
    async with runtime.db.write_session() as session:
        reservation = await session.scalar(
            select(CreditReservation).where(CreditReservation.reference == _reference(job_id))
        )
        if reservation is None or reservation.status != "open":
            return 0
        found = await session.scalar(
            select(func.count()).where(
                EnrichmentItem.job_id == job_id,
                EnrichmentItem.status == "found",
                EnrichmentItem.email_status != "guessed",
            )
        )
        credits = Credits(session, runtime.settings)
        price = runtime.settings.price(KIND)
        units = min(int(found or 0), reservation.held // price if price else 0)
        if units:
            await credits.commit(reservation, units, f"{_reference(job_id)}:used")
        await credits.release(reservation)
        return units * price
