"""Credits for bulk enrichment jobs: a job holds its maximum (one found email per contact) when
it starts, and settles to what it found when it ends, releasing the rest.

Without the credits the job does not fail: its pending contacts wait with the reason (the
job's `waiting_for` shows it) and its workflow waits off the queue. A purchase wakes it at
once: the grant marks its transaction (`credited`), and when that commits the user's waiting
jobs are sent a wake through DBOS, which reaches them in whichever process they wait. Should
that be missed (no DBOS in the granting process, or a grant landing between a job's failed
hold and the start of its wait), the job still asks again every `ROLEFERRY_CREDITS_RETRY_S`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine, event, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from roleferry.enrichment.models import EnrichmentItem, EnrichmentJob
from roleferry.payments.credits import Credits, PaymentRequired
from roleferry.payments.models import CreditReservation

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

log = structlog.get_logger(__name__)
KIND = "email_found"
WAITING = "waiting for credits: "
CREDITED = "roleferry.credited_users"
"""`Session.info` key: the users a transaction credits, woken once it commits."""
_waking: dict[Engine, Runtime] = {}
_tasks: set[asyncio.Task[None]] = set()


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


def credited(session: AsyncSession, user_id: str) -> None:
    """Marks `user_id` as credited by this transaction: their waiting jobs are woken once it
    commits (never before, or they would find the credits not there yet)."""
    session.info.setdefault(CREDITED, set()).add(user_id)


def wake_on_credit(runtime: Runtime) -> None:
    """Grants committed through this runtime's database wake the jobs waiting for them."""
    _waking[runtime.db.engine.sync_engine] = runtime
    if not event.contains(Session, "after_commit", _committed):
        event.listen(Session, "after_commit", _committed)
        event.listen(Session, "after_rollback", _rolled_back)


async def stop_waking(runtime: Runtime) -> None:
    """Before DBOS stops: no new wakes, the ones under way finished."""
    _waking.pop(runtime.db.engine.sync_engine, None)
    if _tasks:
        await asyncio.gather(*_tasks, return_exceptions=True)


def _committed(session: Session) -> None:
    users = session.info.pop(CREDITED, None)
    bind = session.bind
    runtime = _waking.get(bind) if users and isinstance(bind, Engine) else None
    if runtime is None or not users:
        return
    task = asyncio.get_running_loop().create_task(_wake_logged(runtime, sorted(users)))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _rolled_back(session: Session) -> None:
    session.info.pop(CREDITED, None)


async def wake(runtime: Runtime, user_ids: list[str]) -> int:
    """Ends the wait of these users' jobs that wait for credits; returns how many woke."""
    from roleferry.enrichment import workflows

    async with runtime.db.session() as session:
        job_ids = list(
            await session.scalars(
                select(EnrichmentJob.id).where(
                    EnrichmentJob.user_id.in_(user_ids),
                    EnrichmentJob.status == "running",
                    exists().where(
                        EnrichmentItem.job_id == EnrichmentJob.id,
                        EnrichmentItem.status == "pending",
                        EnrichmentItem.reason.like(f"{WAITING}%"),
                    ),
                )
            )
        )
    return await workflows.wake(job_ids) if job_ids else 0


async def _wake_logged(runtime: Runtime, user_ids: list[str]) -> None:
    try:
        woken = await wake(runtime, user_ids)
    except Exception:  # the poll still resumes them; a failed wake only costs time
        log.exception("credit_wake_failed", users=len(user_ids))
        return
    if woken:
        log.info("jobs_woken_by_credits", jobs=woken)
