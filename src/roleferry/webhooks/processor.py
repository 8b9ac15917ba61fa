"""Applies stored events in batches, in arrival order, one transaction per batch: the effects
and the events' `applied` mark commit together, so an event is applied exactly once even if
the process dies between receiving and applying (pending rows wait in the database for the
next process). On PostgreSQL, several processes share the work with SKIP LOCKED.

Not one durable workflow per event: a workflow costs tens of milliseconds, a batch of 500
events a few. Dedupe records are kept `retention_s` (4 days: Stripe retries for 3), then
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import case, delete, null, select, update
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


class InboxProcessor:
    def __init__(
        self,
        database: Database,
        *,
        batch: int = BATCH,
        poll_s: float = POLL_S,
        retention_s: float = RETENTION_S,
    ) -> None:
        self.database = database
        self.batch = batch
        self.poll_s = poll_s
        self.retention_s = retention_s
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
        """Claims up to `batch` pending events, applies them, marks them; returns how many."""
        async with self._one_batch_at_a_time:
            if not self.database.urls.is_sqlite:
                async with self.database.write_session() as session:
                    events = await _pending(session, self.batch, for_update=True)
                    await _apply(session, events)
            else:
                # One process, and in it one batch at a time: the pending events read outside
                # the write lock stay pending until this batch marks them, so the lock is held
                # for the writes only and acknowledgements wait less.
                async with self.database.session() as session:
                    events = await _pending(session, self.batch, for_update=False)
                if events:
                    async with self.database.write_session() as session:
                        await _apply(session, events)
        _count(events, time.time())
        return len(events)

    async def cleanup(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention_s)
        async with self.database.write_session() as session:
            result = await session.execute(
                delete(WebhookEvent).where(
                    WebhookEvent.received_at < cutoff, WebhookEvent.status != PENDING
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _pending(session: AsyncSession, limit: int, *, for_update: bool) -> list[InboxEvent]:
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
        .where(table.c.status == PENDING)
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
    """Effects and the events' marks, in the caller's transaction."""
    if not events:
        return
    effects = Effects(session)
    sendgrid = [e for e in events if e.provider == "sendgrid"]
    if sendgrid:
        await effects.apply_sendgrid(sendgrid)
    for event in events:
        event.status = APPLIED
        if event.provider == "stripe":
            try:
                async with session.begin_nested():
                    await effects.apply_stripe(event)
            except (ValueError, KeyError, TypeError) as exc:
                event.status = FAILED
                event.outcome = f"{type(exc).__name__}: {exc}"
    await _mark(session, events, datetime.now(UTC))


async def _mark(session: AsyncSession, events: list[InboxEvent], now: datetime) -> None:
    """One UPDATE per distinct (status, outcome), of which a batch has a handful."""
    groups: defaultdict[tuple[str, str | None], list[int]] = defaultdict(list)
    for event in events:
        groups[event.status, event.outcome].append(event.id)
    table = EVENTS_TABLE
    for (status, outcome), ids in groups.items():
        await session.execute(
            update(table)
            .where(table.c.id.in_(ids))
            .values(
                status=status,
                outcome=outcome,
                attempts=table.c.attempts + 1,
                applied_at=now if status == APPLIED else None,
            )
        )


def _count(events: list[InboxEvent], finished: float) -> None:
    counts: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    lag = {provider: WEBHOOK_LAG.labels(provider) for provider in {e.provider for e in events}}
    for event in events:
        counts[event.provider][type_label(event.provider, event.type), event.status] += 1
        if event.status == APPLIED:
            lag[event.provider].observe(max(0.0, finished - event.occurred_at))
    for provider, by_outcome in counts.items():
        count_webhook_events(provider, by_outcome)
