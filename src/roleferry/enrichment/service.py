"""Enrichment jobs in the database: creating them (idempotently), listing and reading their
progress, cancelling them, and closing them (finished, cancelled or failed) with a summary
and a notification.

Every change of a job's or a contact's state is a conditional UPDATE (`... WHERE status is
not final`), never a read-modify-write of a loaded row: a cancel and a running chunk may
race, and the first to land wins while the other changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.api.times import iso_z
from roleferry.db import Database
from roleferry.enrichment.intake import Row
from roleferry.enrichment.models import TERMINAL, EnrichmentItem, EnrichmentJob
from roleferry.errors import Conflict, NotFound
from roleferry.notifications.models import Notification

INSERT_CHUNK = 500
"""Contacts per INSERT transaction: short write transactions, so that on SQLite other writers
(webhook acknowledgements) get the lock between two chunks of a 10,000-row upload."""
FINISHED_KIND = "enrichment_job.finished"


@dataclass(frozen=True)
class JobRequest:
    """What a caller asked for: the contacts and the job's settings."""

    rows: list[Row]
    rejected: list[dict[str, Any]]
    callback_url: str | None
    verify_patterns: bool = False
    max_wait_s: float | None = None


def request_hash(request: JobRequest) -> str:
    parts: list[Any] = [
        [r.first_name, r.last_name, r.domain, r.title, r.linkedin_url] for r in request.rows
    ]
    parts.append(request.callback_url)
    if request.verify_patterns:
        parts.append({"verify_patterns": True})
    if request.max_wait_s is not None:
        parts.append({"max_wait_s": request.max_wait_s})
    canonical = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def find_by_key(session: AsyncSession, user_id: str, key: str) -> EnrichmentJob | None:
    return await session.scalar(
        select(EnrichmentJob).where(
            EnrichmentJob.user_id == user_id, EnrichmentJob.idempotency_key == key
        )
    )


async def create(
    database: Database, user_id: str, request: JobRequest, idempotency_key: str | None
) -> tuple[EnrichmentJob, bool]:
    """The new job, or the one this Idempotency-Key already made (then False), with every
    contact saved. The job row is committed first and its contacts after it in chunks; a
    retry with the same key saves whatever contacts a crash left unsaved."""
    digest = await asyncio.to_thread(request_hash, request)
    job: EnrichmentJob | None = None
    if idempotency_key:
        async with database.session() as session:
            job = await find_by_key(session, user_id, idempotency_key)
    created = job is None
    if job is None:
        try:
            async with database.write_session() as session:
                job = EnrichmentJob(
                    user_id=user_id,
                    total=len(request.rows),
                    callback_url=request.callback_url,
                    idempotency_key=idempotency_key,
                    request_hash=digest,
                    rejected=request.rejected,
                    verify_patterns=request.verify_patterns,
                    max_wait_s=request.max_wait_s,
                )
                session.add(job)
        except IntegrityError:
            async with database.session() as session:
                job = await find_by_key(session, user_id, idempotency_key or "")
            if job is None:
                raise
            created = False
    if not created:
        _same_request(job, digest)
    await _save_rows(database, job.id, request.rows)
    return job, created


async def _save_rows(database: Database, job_id: str, rows: list[Row]) -> None:
    """Inserts the contacts not saved yet, INSERT_CHUNK per transaction. Chunks are saved in
    order, so what is saved is always a prefix of `rows`; a concurrent retry inserting the
    same chunk hits the (job, line) unique constraint, and the loop counts again."""
    while True:
        async with database.session() as session:
            saved = int(
                await session.scalar(
                    select(func.count())
                    .select_from(EnrichmentItem)
                    .where(EnrichmentItem.job_id == job_id)
                )
                or 0
            )
        if saved >= len(rows):
            return
        chunk = rows[saved : saved + INSERT_CHUNK]
        try:
            async with database.write_session() as session:
                await session.execute(
                    insert(EnrichmentItem),
                    [
                        {
                            "job_id": job_id,
                            "line": r.line,
                            "first_name": r.first_name,
                            "last_name": r.last_name,
                            "domain": r.domain,
                            "title": r.title,
                            "linkedin_url": r.linkedin_url,
                            "status": "pending",
                            "attempts": 0,
                            "next_attempt_at": 0.0,
                            "tried": "",
                            "provider_calls": 0,
                        }
                        for r in chunk
                    ],
                )
        except IntegrityError:
            continue


def _same_request(job: EnrichmentJob, digest: str) -> EnrichmentJob:
    if job.request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was used for other contacts; use a new key for a new job"
        )
    return job


async def get(session: AsyncSession, user_id: str, job_id: str) -> EnrichmentJob:
    job = await session.scalar(
        select(EnrichmentJob).where(EnrichmentJob.id == job_id, EnrichmentJob.user_id == user_id)
    )
    if job is None:
        raise NotFound(f"no enrichment job {job_id}")
    return job


async def list_jobs(
    session: AsyncSession, user_id: str, status: str | None, limit: int, after: str | None
) -> tuple[list[EnrichmentJob], str | None]:
    """One page of the user's jobs, newest first, and the cursor of the next page (None on
    the last). `after` is the id of the last job of the previous page."""
    query = select(EnrichmentJob).where(EnrichmentJob.user_id == user_id)
    if status:
        query = query.where(EnrichmentJob.status == status)
    if after:
        last = await session.scalar(
            select(EnrichmentJob).where(EnrichmentJob.id == after, EnrichmentJob.user_id == user_id)
        )
        if last is None:  # 404 like any other user's resource: it may exist, not for you
            raise NotFound(
                f"cursor {after!r} is not one of your jobs; pass the `next_cursor` of the "
                "previous page",
                details={"field": "cursor"},
            )
        query = query.where(
            or_(
                EnrichmentJob.created_at < last.created_at,
                and_(EnrichmentJob.created_at == last.created_at, EnrichmentJob.id < last.id),
            )
        )
    jobs = list(
        await session.scalars(
            query.order_by(EnrichmentJob.created_at.desc(), EnrichmentJob.id.desc()).limit(
                limit + 1
            )
        )
    )
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jobs, (jobs[-1].id if more and jobs else None)


async def counts(session: AsyncSession, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's tally of contacts by status, provider and verification, in one query."""
    rows = (
        await session.execute(
            select(
                EnrichmentItem.job_id,
                EnrichmentItem.status,
                EnrichmentItem.source,
                EnrichmentItem.verification,
                func.count(),
                func.sum(EnrichmentItem.provider_calls),
                func.max(EnrichmentItem.next_attempt_at),
            )
            .where(EnrichmentItem.job_id.in_(job_ids))
            .group_by(
                EnrichmentItem.job_id,
                EnrichmentItem.status,
                EnrichmentItem.source,
                EnrichmentItem.verification,
            )
        )
    ).all()
    by_status: dict[str, Counter[str]] = {j: Counter() for j in job_ids}
    by_provider: dict[str, Counter[str]] = {j: Counter() for j in job_ids}
    by_verification: dict[str, Counter[str]] = {j: Counter() for j in job_ids}
    calls: Counter[str] = Counter()
    retry_at: dict[str, float] = {}
    for job_id, status, source, verification, n, provider_calls, latest in rows:
        by_status[job_id][status] += n
        calls[job_id] += int(provider_calls or 0)
        if status == "found":
            if source:
                by_provider[job_id][source] += n
            by_verification[job_id][verification or "unverified"] += n
        if status == "pending" and latest:
            retry_at[job_id] = max(retry_at.get(job_id, 0.0), float(latest))
    out: dict[str, dict[str, Any]] = {}
    for job_id in job_ids:
        statuses = by_status[job_id]
        total = sum(statuses.values())
        out[job_id] = {
            "total": total,
            "done": total - statuses["pending"],
            "found": statuses["found"],
            "not_found": statuses["not_found"],
            "failed": statuses["failed"],
            "cancelled": statuses["cancelled"],
            "pending": statuses["pending"],
            "by_provider": dict(by_provider[job_id]),
            "by_verification": dict(by_verification[job_id]),
            "provider_calls": calls[job_id],
            "latest_retry_at": retry_at.get(job_id),
        }
    return out


async def running_jobs(session: AsyncSession, user_id: str) -> list[str]:
    """The user's running jobs, oldest first: what a queued job of theirs waits behind."""
    return list(
        await session.scalars(
            select(EnrichmentJob.id)
            .where(EnrichmentJob.user_id == user_id, EnrichmentJob.status == "running")
            .order_by(EnrichmentJob.created_at)
        )
    )


def waiting_for(
    job: EnrichmentJob,
    tally: dict[str, Any],
    running: list[str],
    now: float,
    provider_wait: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """What a job that is not over waits for, in words, and until when if that is known.
    `provider_wait` is bulk.waiting's answer for a running job none of whose contacts is due:
    the provider its earliest contact waits for."""
    if job.status in TERMINAL:
        return None
    if job.status == "running" and provider_wait is not None:
        return {
            "reason": provider_wait["reason"] or "a provider to have room again",
            "until": iso_z(provider_wait["until"]),
            "provider": provider_wait["provider"],
        }
    if job.status == "queued":
        ahead = [j for j in running if j != job.id]
        if ahead:
            return {
                "reason": f"your job {ahead[0]} to finish: one job per user runs at a time",
                "until": None,
            }
        return {"reason": "a free worker to start it", "until": None}
    latest = tally["latest_retry_at"]
    if latest and latest > now:
        return {
            "reason": "provider retries: some contacts wait for a provider to recover or for "
            "its rate budget",
            "until": iso_z(latest),
        }
    return {"reason": "provider answers for the contacts in progress", "until": None}


def estimated_completion(job: EnrichmentJob, tally: dict[str, Any], now: float) -> float | None:
    """When the pending contacts will be done at the rate seen since the job started (unix
    seconds), no earlier than the latest scheduled retry; None until a rate is known."""
    if job.status != "running" or job.started_at is None or not tally["done"]:
        return None
    elapsed = max(0.001, now - job.started_at)
    projected = now + tally["pending"] * elapsed / tally["done"]
    return float(max(projected, tally["latest_retry_at"] or 0.0))


async def mark_running(database: Database, job_id: str, now: float) -> bool:
    """False if the job is already over (cancelled before it started)."""
    async with database.write_session() as session:
        await session.execute(
            update(EnrichmentJob)
            .where(EnrichmentJob.id == job_id, EnrichmentJob.status == "queued")
            .values(status="running", started_at=now)
        )
        status = await session.scalar(
            select(EnrichmentJob.status).where(EnrichmentJob.id == job_id)
        )
        return status == "running"


async def cancel(database: Database, user_id: str, job_id: str, now: float) -> dict[str, Any]:
    """Cancels a queued or running job: its pending contacts become `cancelled`, the answers
    already saved stay, its owner is notified. Returns the summary for the callback."""
    async with database.write_session() as session:
        job = await get(session, user_id, job_id)
        changed = await session.execute(
            update(EnrichmentJob)
            .where(EnrichmentJob.id == job_id, EnrichmentJob.status.not_in(TERMINAL))
            .values(status="cancelled", finished_at=now)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            await session.refresh(job)
            raise Conflict(
                f"job {job_id} is already {job.status}; only a queued or running job "
                "can be cancelled"
            )
        await session.execute(
            update(EnrichmentItem)
            .where(EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending")
            .values(status="cancelled", reason="job cancelled before this contact was done")
        )
        return await _close(session, job_id)


async def finish(database: Database, job_id: str, now: float) -> dict[str, Any] | None:
    """Closes a job whose contacts are all done with its final status, and tells its owner;
    None if it was already closed (cancelled meanwhile)."""
    async with database.write_session() as session:
        tally = (await counts(session, [job_id]))[job_id]
        if tally["failed"] == 0:
            status = "succeeded"
        elif tally["found"] + tally["not_found"] > 0:
            status = "partially_succeeded"
        else:
            status = "failed"
        changed = await session.execute(
            update(EnrichmentJob)
            .where(EnrichmentJob.id == job_id, EnrichmentJob.status.not_in(TERMINAL))
            .values(status=status, finished_at=now)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            return None
        return await _close(session, job_id)


async def fail(database: Database, job_id: str, reason: str, now: float) -> dict[str, Any] | None:
    """Fails a job that cannot go on (a step kept failing): its pending contacts are `failed`
    with the reason, and its owner is told. None if it was already closed."""
    async with database.write_session() as session:
        changed = await session.execute(
            update(EnrichmentJob)
            .where(EnrichmentJob.id == job_id, EnrichmentJob.status.not_in(TERMINAL))
            .values(status="failed", finished_at=now, reason=reason)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            return None
        await session.execute(
            update(EnrichmentItem)
            .where(EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending")
            .values(status="failed", reason=f"the job failed: {reason}")
        )
        return await _close(session, job_id)


async def summary(session: AsyncSession, job_id: str) -> dict[str, Any]:
    """A job's state in a notification's or a callback's terms."""
    job = await session.get(EnrichmentJob, job_id, populate_existing=True)
    assert job is not None
    tally = (await counts(session, [job_id]))[job_id]
    tally.pop("latest_retry_at")
    return {
        "id": job.id,
        "status": job.status,
        "reason": job.reason,
        **tally,
        "finished_at": iso_z(job.finished_at) if job.finished_at is not None else None,
        "callback_url": job.callback_url,
    }


async def _close(session: AsyncSession, job_id: str) -> dict[str, Any]:
    """The closed job's summary, and its owner's notification, in the closing transaction."""
    closed = await summary(session, job_id)
    job_status, total, found = closed["status"], closed["total"], closed["found"]
    if job_status == "cancelled":
        title = f"Enrichment job {job_id} cancelled: {found} of {total} emails found before it"
    elif job_status == "failed" and closed["reason"]:
        title = f"Enrichment job {job_id} failed: {closed['reason']}"
    else:
        title = f"Enrichment job {job_id} {job_status}: {found} of {total} emails found"
    job = await session.get(EnrichmentJob, job_id)
    assert job is not None
    session.add(
        Notification(
            user_id=job.user_id,
            kind=FINISHED_KIND,
            title=title[:200],
            data={k: v for k, v in closed.items() if k != "callback_url"},
        )
    )
    return closed
