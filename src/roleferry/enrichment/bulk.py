"""One chunk of a bulk job: the waterfall applied to many contacts at once, inside the bulk
share of each provider's budget, saving every contact's answer as it is known.

- Duplicates within the job, and people this user enriched recently (the search cache),
  cost no provider call: one item asks, the others copy its answer.
- Providers are asked in waterfall order, each for all the chunk's contacts still without a
  verified or likely email, in the batches they allow (Apollo bulk_match: 10 per call).
  Which providers have answered is saved per item, so a retry never asks one twice.
- A spent budget ends the chunk with the wait until there is room (the workflow sleeps it,
  durably); a transient failure leaves the contact pending with exponential backoff, until
  24 hours after the job started, when it is `failed` with the reason. A contact every
  provider answered without an email is `not_found` at once.
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
from roleferry.providers.base import EmailFinder, EmailVerifier
from roleferry.providers.errors import (
    AuthFailed,
    BudgetExhausted,
    InvalidRequest,
    ProviderError,
    QuotaExhausted,
)
from roleferry.providers.models import Contact, PersonQuery
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.ratelimit import Priority
from roleferry.search import cache

CHUNK = 200
CAP_S = 24 * 3600.0
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0
CALL_DEADLINE_S = 30.0
SUFFICIENT = ("verified", "likely")
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
DEFINITIVE = (AuthFailed, QuotaExhausted, InvalidRequest)
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


@dataclass
class _Work:
    item: EnrichmentItem
    query: PersonQuery
    best: Contact | None = None
    tried: set[str] = field(default_factory=set)
    transient: str | None = None


PersonKey = tuple[str, str, str]


def person_key(item: EnrichmentItem) -> PersonKey:
    """Who an item is, for duplicates: a tuple, so that any character in a name round-trips."""
    return item.first_name.strip().lower(), item.last_name.strip().lower(), item.domain


def _backoff(attempts: int, base_s: float) -> float:
    return float(min(BACKOFF_MAX_S, base_s * 2 ** max(0, attempts - 1)))


class BulkEnricher:
    """Reads a chunk in a short transaction, asks providers with no transaction open (on
    SQLite a write transaction would block every other writer for the calls' duration), then
    saves every answer in one short write transaction."""

    def __init__(
        self,
        database: Database,
        order: list[str],
        finders: dict[str, EmailFinder],
        cache_ttl_s: int,
        clock: Callable[[], float] = time.time,
        backoff_s: float = BACKOFF_BASE_S,
        verifier: EmailVerifier | None = None,
    ) -> None:
        self.verifier = verifier
        self.backoff_s = backoff_s
        self.database = database
        self.order = order
        self.finders = finders
        self.cache_ttl_s = cache_ttl_s
        self.clock = clock

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
        asked = await self._unless_stopped(job_id, self._providers(work))
        if asked is STOPPED:
            return ChunkResult(cancelled=True)
        wait, answered = asked
        saves: list[tuple[str, dict[str, object]]] = []
        for w in work:
            saved = self._conclude(w, now)
            if saved is not None:
                saves.append(saved)
        if job.verify_patterns and self.verifier is not None:
            checked = await self._unless_stopped(
                job_id, verification.verify_patterns(self.verifier, items)
            )
            if checked is STOPPED:
                return ChunkResult(cancelled=True)
        for item in items:
            if item.duplicate_of is not None and item.status == "pending":
                leader = next((i for i in items if i.id == item.duplicate_of), None)
                if leader is not None and leader.status != "pending":
                    _copy(item, leader)
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
        result = ChunkResult(
            done=done, remaining=remaining, wait_s=0.0 if answered or done else wait
        )
        if remaining and not wait:
            result.wait_s = max(0.0, float(due or now) - self.clock())
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
    ) -> list[_Work]:
        """Answers duplicates and recent look-ups from what is known; returns what to ask."""
        leaders: dict[PersonKey, EnrichmentItem] = {}
        work: list[_Work] = []
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
            hit = await cache.get(session, job.user_id, "enrich", _cache_key(item))
            if hit is not None:
                found = "found" if hit.get("email") else "not_found"
                _settle(
                    item,
                    found,
                    hit.get("email"),
                    hit.get("source"),
                    hit.get("confidence"),
                    hit.get("status"),
                    f"{found.replace('_', ' ')} recently (cached)",
                )
                continue
            query = PersonQuery(
                first_name=item.first_name,
                last_name=item.last_name,
                domain=item.domain,
                linkedin_url=item.linkedin_url,
            )
            work.append(_Work(item, query, tried={t for t in item.tried.split(",") if t}))
        return work

    async def _providers(self, work: list[_Work]) -> tuple[float, bool]:
        """Asks each provider for the contacts whose earlier providers have all answered
        without a sufficient email. A provider whose budget is spent is skipped for this
        chunk while the others go on. Returns the shortest wait for a spent budget, and
        whether any provider answered."""
        waits: list[float] = []
        answered = False
        for index, name in enumerate(self.order):
            before = self.order[:index]
            asking = [
                w
                for w in work
                if name not in w.tried
                and not _sufficient(w.best)
                and all(b in w.tried for b in before)
            ]
            if not asking:
                continue
            tried_before = sum(len(w.tried) for w in asking)
            wait = await self._ask(name, asking)
            answered = answered or sum(len(w.tried) for w in asking) > tried_before
            if wait:
                waits.append(wait)
        return (min(waits) if waits else 0.0), answered

    async def _ask(self, name: str, asking: list[_Work]) -> float:
        finder = self.finders[name]
        for start in range(0, len(asking), finder.batch_size):
            batch = asking[start : start + finder.batch_size]
            try:
                found = await finder.find_emails(
                    [w.query for w in batch],
                    deadline=Deadline(CALL_DEADLINE_S),
                    priority=Priority.BULK,
                )
            except BudgetExhausted as exc:
                return exc.retry_in
            except ProviderError as exc:
                for w in batch:
                    if isinstance(exc, DEFINITIVE):
                        w.tried.add(name)
                    else:
                        w.transient = f"{name}: {exc.kind}"
                    w.item.provider_calls += 1
                continue
            for w, contact in zip(batch, found, strict=True):
                w.tried.add(name)
                w.item.provider_calls += 1
                if contact is None or not contact.email:
                    continue
                if w.best is None or _rank(contact) > _rank(w.best):
                    w.best = contact
        return 0.0

    def _conclude(self, w: _Work, now: float) -> tuple[str, dict[str, object]] | None:
        """Settles one contact from its answers; returns what to cache when found."""
        item = w.item
        item.tried = ",".join(sorted(w.tried))
        best = w.best
        if _sufficient(best):
            assert best is not None
            source = best.sources.get("email")
            _settle(
                item, "found", best.email, source, best.email_confidence, best.email_status, None
            )
            return _cache_key(item), {
                "email": best.email,
                "source": source,
                "confidence": best.email_confidence,
                "status": best.email_status,
            }
        if set(self.order) <= w.tried:
            guess = (
                f"; only a low-confidence guess: {best.email} ({best.email_confidence})"
                if best
                else ""
            )
            _settle(
                item, "not_found", None, None, None, None, f"no provider knows this person{guess}"
            )
            return _cache_key(item), {
                "email": None,
                "source": None,
                "confidence": None,
                "status": None,
            }
        item.attempts += 1
        item.reason = w.transient or "waiting for provider budget"
        if w.transient:
            item.next_attempt_at = now + _backoff(item.attempts, self.backoff_s)
        return None

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


def _cache_key(item: EnrichmentItem) -> str:
    return cache.cache_key(
        {
            "first_name": item.first_name.strip().lower(),
            "last_name": item.last_name.strip().lower(),
            "domain": item.domain,
        }
    )


def _rank(contact: Contact) -> int:
    return {"verified": 3, "likely": 2, "guessed": 1}.get(contact.email_status or "", 0)


def _sufficient(contact: Contact | None) -> bool:
    return contact is not None and bool(contact.email) and contact.email_status in SUFFICIENT


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
