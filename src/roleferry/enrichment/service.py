"""Enrichment jobs in the database: creating them (idempotently), reading their progress and
results, cancelling them, and closing them with a summary and a notification."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import Database
from roleferry.enrichment.intake import Row
from roleferry.enrichment.models import TERMINAL, EnrichmentItem, EnrichmentJob
from roleferry.errors import Conflict, NotFound
from roleferry.notifications.models import Notification


def request_hash(rows: list[Row], callback_url: str | None) -> str:
    canonical = json.dumps(
        [[r.first_name, r.last_name, r.domain, r.title, r.linkedin_url] for r in rows]
        + [callback_url],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def find_by_key(session: AsyncSession, user_id: str, key: str) -> EnrichmentJob | None:
    return await session.scalar(
        select(EnrichmentJob).where(
            EnrichmentJob.user_id == user_id, EnrichmentJob.idempotency_key == key
        )
    )


async def create(
    database: Database,
    user_id: str,
    rows: list[Row],
    rejected: list[dict[str, Any]],
    callback_url: str | None,
    idempotency_key: str | None,
) -> tuple[EnrichmentJob, bool]:
    """The new job, or the one this Idempotency-Key already made (then False)."""
    digest = request_hash(rows, callback_url)
    async with database.session() as session:
        if idempotency_key:
            existing = await find_by_key(session, user_id, idempotency_key)
            if existing is not None:
                return _same_request(existing, digest), False
    try:
        async with database.write_session() as session:
            job = EnrichmentJob(
                user_id=user_id,
                total=len(rows),
                callback_url=callback_url,
                idempotency_key=idempotency_key,
                request_hash=digest,
                rejected=rejected,
            )
            session.add(job)
            await session.flush()
            session.add_all(
                EnrichmentItem(
                    job_id=job.id,
                    line=r.line,
                    first_name=r.first_name,
                    last_name=r.last_name,
                    domain=r.domain,
                    title=r.title,
                    linkedin_url=r.linkedin_url,
                )
                for r in rows
            )
        return job, True
    except IntegrityError:
        async with database.session() as session:
            existing = await find_by_key(session, user_id, idempotency_key or "")
            if existing is None:
                raise
            return _same_request(existing, digest), False


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


async def counts(session: AsyncSession, job_id: str) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(
                EnrichmentItem.status,
                EnrichmentItem.source,
                func.count(),
                func.sum(EnrichmentItem.provider_calls),
            )
            .where(EnrichmentItem.job_id == job_id)
            .group_by(EnrichmentItem.status, EnrichmentItem.source)
        )
    ).all()
    by_status: Counter[str] = Counter()
    by_provider: Counter[str] = Counter()
    calls = 0
    for status, source, n, provider_calls in rows:
        by_status[status] += n
        calls += int(provider_calls or 0)
        if status == "found" and source:
            by_provider[source] += n
    total = sum(by_status.values())
    return {
        "total": total,
        "done": total - by_status["pending"],
        "found": by_status["found"],
        "not_found": by_status["not_found"],
        "failed": by_status["failed"],
        "pending": by_status["pending"],
        "by_provider": dict(by_provider),
        "provider_calls": calls,
    }


async def mark_running(database: Database, job_id: str, now: float) -> bool:
    """False if the job was cancelled before it started."""
    async with database.write_session() as session:
        job = await session.get(EnrichmentJob, job_id)
        if job is None or job.status == "cancelled":
            return False
        if job.status == "queued":
            job.status = "running"
            job.started_at = now
        return True


async def cancel(database: Database, user_id: str, job_id: str) -> EnrichmentJob:
    async with database.write_session() as session:
        job = await get(session, user_id, job_id)
        if job.status in TERMINAL:
            raise Conflict(f"job {job_id} is already {job.status}")
        job.status = "cancelled"
        await session.execute(
            update(EnrichmentItem)
            .where(EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending")
            .values(status="failed", reason="job cancelled")
        )
        return job


async def finish(database: Database, job_id: str, now: float) -> dict[str, Any]:
    """Closes the job with its final status, and tells its owner."""
    async with database.write_session() as session:
        job = await session.get(EnrichmentJob, job_id)
        assert job is not None
        tally = await counts(session, job_id)
        if job.status != "cancelled":
            if tally["failed"] == 0:
                job.status = "succeeded"
            elif tally["found"] + tally["not_found"] > 0:
                job.status = "partially_succeeded"
            else:
                job.status = "failed"
        job.finished_at = now
        summary = {"id": job.id, "status": job.status, "callback_url": job.callback_url, **tally}
        session.add(
            Notification(
                user_id=job.user_id,
                kind="enrichment_job.finished",
                title=f"Enrichment job {job.id} {job.status}: {tally['found']} of "
                f"{tally['total']} emails found",
                data={k: v for k, v in summary.items() if k != "callback_url"},
            )
        )
        return summary
