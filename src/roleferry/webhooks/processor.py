"""Applies stored events in batches, in arrival order, one transaction per batch: the effects
and the events' `applied` mark commit together, so an event is applied exactly once even if
the process dies between receiving and applying (pending rows wait in the database for the
next process). On PostgreSQL, several processes share the work with SKIP LOCKED.

Not one durable workflow per event: a workflow costs tens of milliseconds, a batch of 500
events a few. Dedupe records are kept `retention_s` (4 days: Stripe retries for 3), then
deleted.

One event never holds up the others. A batch is applied whole (the fast path); if that
raises, whatever the error (an unexpected payload shape, a value the database refuses), the
batch is applied again in chunks, each in a savepoint, and a chunk that fails in halves, down
to the events that fail alone. Those are counted (`attempts`, and `retried` in the events
metric) and tried again after a backoff that doubles, up to `max_attempts` in all, then parked
as `failed` with the error: an admin can replay them. An event the effects reject as invalid
(a value no column can hold) fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import case, delete, null, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.background import cancel_and_wait
from roleferry.db import Database
from roleferry.monitoring.metrics import WEBHOOK_LAG, count_webhook_events
from roleferry.webhooks.effects import SENDGRID_FIELDS, Effects
from roleferry.webhooks.inbox import type_label
from roleferry.webhooks.models import (
    APPLIED,
    EVENTS_TABLE,
    FAILED,
    PENDING,
    InboxEvent,
    WebhookEvent,
)

log = structlog.get_logger(__name__)

BATCH = 2_000
POLL_S = 0.5
RETENTION_S = 4 * 24 * 3600
CLEANUP_EVERY_S = 600.0
RETRIED = "retried"
MAX_ATTEMPTS = 5
BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
ISOLATION_CHUNK = 100
"""The slow path applies a batch in savepoints of this many events, then halves the chunks
that fail. Halving the whole batch of 2,000 re-applies most of it at each of about eleven
levels when bad events are spread out: with 0.2% of them, chunks took about a third less CPU."""


class InboxProcessor:
    def __init__(
        self,
        database: Database,
        *,
        batch: int = BATCH,
        poll_s: float = POLL_S,
        retention_s: float = RETENTION_S,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.database = database
        self.batch = batch
        self.poll_s = poll_s
        self.retention_s = retention_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.clock: Callable[[], float] = time.time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_cleanup = 0.0
        self._one_batch_at_a_time = asyncio.Lock()

    def wake(self) -> None:
        """New events are stored: apply them now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-inbox-processor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                applied = await self.apply_batch()
                if time.monotonic() - self._last_cleanup > CLEANUP_EVERY_S:
                    await self.cleanup()
                    self._last_cleanup = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook_processor_failed")
                applied = 0
                await asyncio.sleep(self.poll_s)
            if applied < self.batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def apply_batch(self) -> int:
        """Claims up to `batch` pending events that are due, applies them, marks them; returns
        how many it handled."""
        async with self._one_batch_at_a_time:
            now = self.clock()
            if not self.database.urls.is_sqlite:
                events = await self._claimed(now, isolated=False)
                if events is None:
                    # Rolled back, so the locks went with it: claim again, maybe other events.
                    events = await self._claimed(now, isolated=True) or []
            else:
                # One process, and in it one batch at a time: the pending events read outside
                # the write lock stay pending until this batch marks them, so the lock is held
                # for the writes only and acknowledgements wait less.
                async with self.database.session() as session:
                    events = await _pending(session, self.batch, now, for_update=False)
                if events:
                    try:
                        async with self.database.write_session() as session:
                            await _apply(session, events)
                    except Exception as exc:
                        _fast_path_failed(exc, events)
                        async with self.database.write_session() as session:
                            await self._apply_isolated(session, events, now)
        _count(events, time.time())
        return len(events)

    async def _claimed(self, now: float, *, isolated: bool) -> list[InboxEvent] | None:
        """PostgreSQL: claims and applies in one transaction; None when the fast path failed."""
        events: list[InboxEvent] = []
        try:
            async with self.database.write_session() as session:
                events = await _pending(session, self.batch, now, for_update=True)
                if isolated:
                    await self._apply_isolated(session, events, now)
                else:
                    await _apply(session, events)
        except Exception as exc:
            if isolated or not events:
                raise
            _fast_path_failed(exc, events)
            return None
        return events

    async def _apply_isolated(
        self, session: AsyncSession, events: list[InboxEvent], now: float
    ) -> None:
        """The slow path: the events that fail alone found and retried or parked, the others
        applied, all marked in the caller's transaction."""
        effects = Effects(session)
        failures = []
        for start in range(0, len(events), ISOLATION_CHUNK):
            chunk = events[start : start + ISOLATION_CHUNK]
            failures += await _bisect(session, effects, chunk)
        if failures:
            query = select(EVENTS_TABLE.c.id, EVENTS_TABLE.c.attempts).where(
                EVENTS_TABLE.c.id.in_([e.id for e, _ in failures])
            )
            attempts: dict[int, int] = dict((await session.execute(query)).all())
            for event, exc in failures:
                self._failed(event, exc, attempts.get(event.id, 0) + 1, now)
        await _mark(session, events, datetime.now(UTC))

    def _failed(self, event: InboxEvent, exc: Exception, attempt: int, now: float) -> None:
        reason = _reason(exc)
        log.warning(
            "webhook_event_failed",
            event_pk=event.id,
            provider=event.provider,
            type=type_label(event.provider, event.type),
            error=type(exc).__name__,
            attempt=attempt,
            parked=attempt >= self.max_attempts,
        )
        if attempt >= self.max_attempts:
            event.status = FAILED
            event.outcome = f"error after {attempt} attempts: {reason}"
        else:
            event.status = PENDING
            event.outcome = f"retrying after attempt {attempt}: {reason}"
            event.retry_at = now + min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))

    async def cleanup(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention_s)
        async with self.database.write_session() as session:
            result = await session.execute(
                delete(WebhookEvent).where(
                    WebhookEvent.received_at < cutoff, WebhookEvent.status != PENDING
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _pending(
    session: AsyncSession, limit: int, now: float, *, for_update: bool
) -> list[InboxEvent]:
    table = EVENTS_TABLE
    query = (
        select(
            table.c.id,
            table.c.provider,
            table.c.event_id,
            table.c.type,
            table.c.occurred_at,
            # SendGrid's effects read three fields: the database extracts them, which costs
            # far less than decoding every payload here. Stripe's are read whole.
            case((table.c.provider == "stripe", table.c.payload), else_=null()).label(
                "stripe_payload"
            ),
            *(table.c.payload[f].as_string() for f in SENDGRID_FIELDS),
        )
        .where(table.c.status == PENDING, or_(table.c.retry_at.is_(None), table.c.retry_at <= now))
        .order_by(table.c.id)
        .limit(limit)
    )
    if for_update:
        query = query.with_for_update(skip_locked=True)
    return [
        InboxEvent(
            row.id,
            row.provider,
            row.event_id,
            row.type,
            row.occurred_at,
            row.stripe_payload
            if row.stripe_payload is not None
            else {f: v for f, v in zip(SENDGRID_FIELDS, row[6:], strict=True) if v},
        )
        for row in (await session.execute(query)).all()
    ]


async def _apply(session: AsyncSession, events: list[InboxEvent]) -> None:
    """The fast path: the whole batch's effects and marks, in the caller's transaction."""
    if not events:
        return
    await _effects(Effects(session), events)
    await _mark(session, events, datetime.now(UTC))


async def _effects(effects: Effects, events: list[InboxEvent]) -> None:
    for event in events:
        event.status, event.outcome = APPLIED, None
    sendgrid = [e for e in events if e.provider == "sendgrid"]
    if sendgrid:
        await effects.apply_sendgrid(sendgrid)
    for event in events:
        if event.provider == "stripe":
            await effects.apply_stripe(event)


async def _bisect(
    session: AsyncSession, effects: Effects, events: list[InboxEvent]
) -> list[tuple[InboxEvent, Exception]]:
    """Applies `events` in a savepoint; if that fails, each half in its own, and so on down to
    the events that fail alone, which it returns."""
    try:
        async with session.begin_nested():
            await _effects(effects, events)
        return []
    except Exception as exc:
        if len(events) == 1:
            return [(events[0], exc)]
    middle = len(events) // 2
    return [
        *await _bisect(session, effects, events[:middle]),
        *await _bisect(session, effects, events[middle:]),
    ]


def _fast_path_failed(exc: Exception, events: list[InboxEvent]) -> None:
    log.info("webhook_batch_isolating", events=len(events), error=type(exc).__name__)


def _reason(exc: Exception) -> str:
    """What went wrong, for the admin's list: the driver's own message for a database error
    (the SQL and its values left out), the first line only, bounded."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:500]


async def _mark(session: AsyncSession, events: list[InboxEvent], now: datetime) -> None:
    """One UPDATE per distinct (status, outcome, retry time), of which a batch has a handful."""
    groups: defaultdict[tuple[str, str | None, float | None], list[int]] = defaultdict(list)
    for event in events:
        groups[event.status, event.outcome, event.retry_at].append(event.id)
    table = EVENTS_TABLE
    for (status, outcome, retry_at), ids in groups.items():
        await session.execute(
            update(table)
            .where(table.c.id.in_(ids))
            .values(
                status=status,
                outcome=outcome,
                attempts=table.c.attempts + 1,
                retry_at=retry_at,
                applied_at=now if status == APPLIED else None,
            )
        )


def _count(events: list[InboxEvent], finished: float) -> None:
    counts: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    lag = {provider: WEBHOOK_LAG.labels(provider) for provider in {e.provider for e in events}}
    for event in events:
        outcome = RETRIED if event.status == PENDING else event.status
        counts[event.provider][type_label(event.provider, event.type), outcome] += 1
        if event.status == APPLIED:
            lag[event.provider].observe(max(0.0, finished - event.occurred_at))
    for provider, by_outcome in counts.items():
        count_webhook_events(provider, by_outcome)
