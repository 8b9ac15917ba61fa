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
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import bindparam, delete, select, update

from roleferry.background import cancel_and_wait
from roleferry.db import Database
from roleferry.monitoring.metrics import WEBHOOK_EVENTS, WEBHOOK_LAG
from roleferry.webhooks.effects import Effects
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
        table = EVENTS_TABLE
        async with self.database.write_session() as session:
            query = (
                select(
                    table.c.id,
                    table.c.provider,
                    table.c.event_id,
                    table.c.type,
                    table.c.payload,
                    table.c.occurred_at,
                    table.c.attempts,
                )
                .where(table.c.status == PENDING)
                .order_by(table.c.id)
                .limit(self.batch)
            )
            if not self.database.urls.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            events = [InboxEvent(*row) for row in (await session.execute(query)).all()]
            if not events:
                return 0
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
            now = datetime.now(UTC)
            await session.execute(
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(
                    status=bindparam("new_status"),
                    outcome=bindparam("new_outcome"),
                    attempts=bindparam("new_attempts"),
                    applied_at=bindparam("new_applied_at"),
                ),
                [
                    {
                        "row_id": e.id,
                        "new_status": e.status,
                        "new_outcome": e.outcome,
                        "new_attempts": e.attempts + 1,
                        "new_applied_at": now if e.status == APPLIED else None,
                    }
                    for e in events
                ],
            )
        finished = time.time()
        for event in events:
            WEBHOOK_EVENTS.labels(
                event.provider, type_label(event.provider, event.type), event.status
            ).inc()
            if event.status == APPLIED:
                WEBHOOK_LAG.labels(event.provider).observe(max(0.0, finished - event.occurred_at))
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
