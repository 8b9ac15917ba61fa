"""One chunk of a bulk job: the waterfall engine applied to many contacts at once at bulk
priority, inside the bulk share of each provider's budget, saving every contact's decision.

- Duplicates within the job, and people this user enriched recently (the cache search's
  enrich shares), cost no provider call: one item asks, the others copy its answer.
- The engine asks providers in waterfall order, each for all the chunk's contacts still
  without a verified or likely email, in the batches they allow (Apollo bulk_match: 10 per
  call). Which providers have answered is saved per item, so a retry never asks one twice.
- A provider whose breaker is open or whose budget is spent is skipped at once. A contact
  waits for it (the workflow sleeps, durably) only when it frees within the job's
  `max_wait_s`, else goes on without it. A transient failure leaves the contact pending with
  exponential backoff, until 24 hours after the job started, when it is `failed` with the
  reason. A contact every provider answered without an email is `not_found` at once.
- A cancel stops the chunk while it waits for providers; its answers are saved with
  conditional updates (only over contacts still pending), so a cancel always stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import Database
from roleferry.enrichment import verification
from roleferry.enrichment.models import TERMINAL, EnrichmentItem, EnrichmentJob
from roleferry.providers.base import EmailVerifier
from roleferry.providers.models import PersonQuery
from roleferry.resilience.ratelimit import Priority, owner
from roleferry.search import cache
from roleferry.search.service import enrich_cache_key, enrich_response
from roleferry.waterfall.decisions import SUFFICIENT, Found, NotFound, RetryAt
from roleferry.waterfall.engine import WaitPolicy, Waterfall

CHUNK = 200
CAP_S = 24 * 3600.0
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0
MAX_WAIT_S = 60.0
CANCEL_POLL_S = 0.05
CANCEL_DB_CHECK_S = 1.0
SAVED_FIELDS = (
    "status",
    "email",
    "source",
    "confidence",
    "email_status",
    "verification",
    "reason",
    "attempts",
    "next_attempt_at",
    "tried",
    "provider_calls",
    "duplicate_of",
)
_stop_requests: set[str] = set()
STOPPED = object()


def request_stop(job_id: str) -> None:
    """Tells this process's chunk of the job, if one is running, to stop now (a cancel).
    Other processes find out from the database within CANCEL_DB_CHECK_S."""
    _stop_requests.add(job_id)


@dataclass
class ChunkResult:
    done: int = 0
    remaining: int = 0
    wait_s: float = 0.0
    cancelled: bool = False
    waiting: dict[str, Any] | None = field(default=None)
    """While the job sleeps: {provider, until (unix s), reason}."""
    user_id: str | None = None


def _waiting(provider: str | None, until: float, reason: str) -> dict[str, Any]:
    return {"provider": provider, "until": until, "reason": reason}


async def waiting(session: AsyncSession, job_id: str, now: float) -> dict[str, Any] | None:
    """What a running job waits for, when none of its pending contacts is due: the earliest
    one's provider (a waiting contact's `source` names the provider it waits for), time and
    reason; None while it has work to do."""
    pending = EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending"
    due_now = await session.scalar(
        select(EnrichmentItem.id).where(*pending, EnrichmentItem.next_attempt_at <= now).limit(1)
    )
    if due_now is not None:
        return None
    first = await session.scalar(
        select(EnrichmentItem).where(*pending).order_by(EnrichmentItem.next_attempt_at).limit(1)
    )
    if first is None:
        return None
    return _waiting(first.source, first.next_attempt_at, first.reason or "")


PersonKey = tuple[str, str, str]


def person_key(item: EnrichmentItem) -> PersonKey:
    """Who an item is, for duplicates: a tuple, so that any character in a name round-trips."""
    return item.first_name.strip().lower(), item.last_name.strip().lower(), item.domain


def _backoff(attempts: int, base_s: float) -> float:
    return float(min(BACKOFF_MAX_S, base_s * 2 ** max(0, attempts - 1)))


def _query(item: EnrichmentItem) -> PersonQuery:
    return PersonQuery(
        first_name=item.first_name,
        last_name=item.last_name,
        domain=item.domain,
        linkedin_url=item.linkedin_url,
    )


class BulkEnricher:
    """Reads a chunk in a short transaction, asks providers with no transaction open (on
    SQLite a write transaction would block every other writer for the calls' duration), then
    saves every answer in one short write transaction."""

    def __init__(
        self,
        database: Database,
        waterfall: Waterfall,
        cache_ttl_s: int,
        clock: Callable[[], float] = time.time,
        backoff_s: float = BACKOFF_BASE_S,
        max_wait_s: float = MAX_WAIT_S,
        verifier: EmailVerifier | None = None,
    ) -> None:
        self.verifier = verifier
        self.backoff_s = backoff_s
        self.database = database
        self.waterfall = waterfall
        self.cache_ttl_s = cache_ttl_s
        self.clock = clock
        self.max_wait_s = max_wait_s

    async def run(self, job_id: str) -> ChunkResult:
        now = self.clock()
        async with self.database.session() as session:
            job = await session.get(EnrichmentJob, job_id)
            if job is None or job.status in TERMINAL:
                _stop_requests.discard(job_id)
                return ChunkResult(cancelled=True)
            if job.started_at is not None and now - job.started_at > CAP_S:
                await self._give_up(job_id)
                return ChunkResult()
            items = list(
                await session.scalars(
                    select(EnrichmentItem)
                    .where(
                        EnrichmentItem.job_id == job_id,
                        EnrichmentItem.status == "pending",
                        EnrichmentItem.next_attempt_at <= now,
                    )
                    .order_by(EnrichmentItem.id)
                    .limit(CHUNK)
                )
            )
            # Detached: what the chunk decides is saved only by the conditional save below,
            # never flushed by this read session over a cancel that landed meanwhile.
            session.expunge_all()
            work = await self._plan(session, job, items)
        max_wait_s = self.max_wait_s if job.max_wait_s is None else job.max_wait_s
        asked = await self._unless_stopped(job_id, self._ask(job.user_id, work, now, max_wait_s))
        if asked is STOPPED:
            return ChunkResult(cancelled=True)
        saves, waiting = asked
        if job.verify_patterns and self.verifier is not None:
            checked = await self._unless_stopped(
                job_id, verification.verify_patterns(self.verifier, items)
            )
            if checked is STOPPED:
                return ChunkResult(cancelled=True)
        user_id = job.user_id
        for item in items:
            if item.duplicate_of is not None and item.status == "pending":
                leader = next((i for i in items if i.id == item.duplicate_of), None)
                if leader is not None and leader.status != "pending":
                    _copy(item, leader)
                elif leader is not None:
                    item.next_attempt_at, item.reason = leader.next_attempt_at, leader.reason
        async with self.database.write_session() as session:
            if items:
                await session.execute(_SAVE, [_saved(item) for item in items])
            for key, value in saves:
                await cache.put(
                    session, job.user_id, "enrich", key, value, self.cache_ttl_s, commit=False
                )
            pending = EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending"
            remaining = int(
                await session.scalar(
                    select(func.count()).select_from(EnrichmentItem).where(*pending)
                )
                or 0
            )
            due = await session.scalar(
                select(func.min(EnrichmentItem.next_attempt_at)).where(*pending)
            )
        done = sum(1 for i in items if i.status != "pending")
        result = ChunkResult(done=done, remaining=remaining, user_id=user_id)
        if remaining:
            result.wait_s = max(0.0, float(due or now) - self.clock())
            if result.wait_s > 0:
                result.waiting = waiting or _waiting(
                    None, float(due or now), "retrying contacts after transient failures"
                )
        return result

    async def _unless_stopped(self, job_id: str, work: Any) -> Any:
        """Awaits `work`, unless the job is cancelled (or otherwise closed) first: then the
        work is abandoned and STOPPED returned, so the workflow ends and frees the user's slot
        at once instead of after the chunk's provider calls."""
        task = asyncio.ensure_future(work)
        try:
            last_check = time.monotonic()
            while not task.done():
                await asyncio.wait({task}, timeout=CANCEL_POLL_S)
                if task.done():
                    break
                if job_id in _stop_requests:
                    _stop_requests.discard(job_id)
                    return STOPPED
                if time.monotonic() - last_check >= CANCEL_DB_CHECK_S:
                    last_check = time.monotonic()
                    async with self.database.session() as session:
                        status = await session.scalar(
                            select(EnrichmentJob.status).where(EnrichmentJob.id == job_id)
                        )
                    if status is None or status in TERMINAL:
                        return STOPPED
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _plan(
        self, session: AsyncSession, job: EnrichmentJob, items: list[EnrichmentItem]
    ) -> list[EnrichmentItem]:
        """Answers duplicates and recent look-ups from what is known; returns what to ask."""
        leaders: dict[PersonKey, EnrichmentItem] = {}
        work: list[EnrichmentItem] = []
        for item in items:
            key = person_key(item)
            earlier = await self._answered(session, job.id, key)
            if earlier is not None:
                _copy(item, earlier)
                continue
            if key in leaders:
                item.duplicate_of = leaders[key].id
                continue
            leaders[key] = item
            hit = await cache.get(session, job.user_id, "enrich", enrich_cache_key(_query(item)))
            if hit is not None:
                found = "found" if hit.get("status") in SUFFICIENT else "not_found"
                email = hit.get("email") if found == "found" else None
                _settle(
                    item,
                    found,
                    email,
                    hit.get("source") if email else None,
                    hit.get("confidence") if email else None,
                    hit.get("status") if email else None,
                    f"{found.replace('_', ' ')} recently (cached)",
                )
                continue
            work.append(item)
        return work

    async def _ask(
        self, user_id: str, work: list[EnrichmentItem], now: float, max_wait_s: float
    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any] | None]:
        """The engine's decisions for the chunk, applied to its items; returns what to cache
        and, if contacts wait for a provider, the earliest such wait."""
        dones = [{t for t in item.tried.split(",") if t} for item in work]
        with owner(user_id):
            decisions = await self.waterfall.enrich(
                [_query(item) for item in work],
                priority=Priority.BULK,
                wait=WaitPolicy(max_wait_s),
                done=dones,
            )
        saves: list[tuple[str, dict[str, Any]]] = []
        waits: list[RetryAt] = []
        for item, decision, done in zip(work, decisions, dones, strict=True):
            item.provider_calls += sum(
                1 for a in decision.attempts if not a.outcome.startswith("skipped_")
            )
            if isinstance(decision, Found):
                contact = decision.contact
                _settle(
                    item,
                    "found",
                    contact.email,
                    decision.source,
                    decision.confidence,
                    decision.verification,
                    None,
                )
            elif isinstance(decision, NotFound):
                _settle(item, "not_found", None, None, None, None, decision.reason)
            if isinstance(decision, Found | NotFound):
                if not decision.degraded:
                    value = enrich_response(decision).model_dump(mode="json")
                    saves.append((enrich_cache_key(_query(item)), value))
            else:
                item.attempts += 1
                item.reason = decision.reason
                if decision.transient:
                    item.source = None
                    item.next_attempt_at = now + _backoff(item.attempts, self.backoff_s)
                else:
                    item.source = decision.provider
                    item.next_attempt_at = decision.at
                    waits.append(decision)
            item.tried = ",".join(sorted(done))
        first = min(waits, key=lambda d: d.at, default=None)
        return saves, _waiting(first.provider, first.at, first.reason) if first else None

    async def _answered(
        self, session: AsyncSession, job_id: str, key: PersonKey
    ) -> EnrichmentItem | None:
        first, last, domain = key
        return await session.scalar(
            select(EnrichmentItem)
            .where(
                EnrichmentItem.job_id == job_id,
                EnrichmentItem.status != "pending",
                EnrichmentItem.duplicate_of.is_(None),
                EnrichmentItem.domain == domain,
                func.lower(EnrichmentItem.first_name) == first,
                func.lower(EnrichmentItem.last_name) == last,
            )
            .limit(1)
        )

    async def _give_up(self, job_id: str) -> None:
        async with self.database.write_session() as session:
            await session.execute(
                update(EnrichmentItem)
                .where(EnrichmentItem.job_id == job_id, EnrichmentItem.status == "pending")
                .values(
                    status="failed",
                    reason=func.coalesce(EnrichmentItem.reason, "no answer")
                    + " (gave up 24 hours after the job started)",
                )
            )


def _settle(
    item: EnrichmentItem,
    status: str,
    email: str | None,
    source: str | None,
    confidence: int | None,
    email_status: str | None,
    reason: str | None,
) -> None:
    item.status = status
    item.email = email
    item.source = source
    item.confidence = confidence
    item.email_status = email_status
    item.verification = verification.of(email_status) if email else None
    item.reason = reason


def _copy(item: EnrichmentItem, leader: EnrichmentItem) -> None:
    _settle(
        item,
        leader.status,
        leader.email,
        leader.source,
        leader.confidence,
        leader.email_status,
        f"duplicate of line {leader.line}",
    )
    item.duplicate_of = leader.id
    item.verification = leader.verification


_SAVE = (
    update(EnrichmentItem.__table__)  # type: ignore[arg-type]
    .where(
        EnrichmentItem.__table__.c.id == bindparam("item_id"),
        EnrichmentItem.__table__.c.status == "pending",
    )
    .values({name: bindparam(f"new_{name}") for name in SAVED_FIELDS})
)
"""Saves a chunk's answers only over contacts still pending: a contact cancelled (or given
up) while the chunk asked its providers keeps that state."""


def _saved(item: EnrichmentItem) -> dict[str, Any]:
    return {"item_id": item.id, **{f"new_{name}": getattr(item, name) for name in SAVED_FIELDS}}
