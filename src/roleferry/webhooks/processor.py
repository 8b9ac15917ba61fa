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
from sqlalchemy import delete, select

from roleferry.db import Database
from roleferry.monitoring.metrics import WEBHOOK_EVENTS, WEBHOOK_LAG
from roleferry.webhooks.effects import Effects
from roleferry.webhooks.inbox import type_label
from roleferry.webhooks.models import APPLIED, FAILED, PENDING, WebhookEvent

log = structlog.get_logger(__name__)

BATCH = 500
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        async with self.database.write_session() as session:
            query = (
                select(WebhookEvent)
                .where(WebhookEvent.status == PENDING)
                .order_by(WebhookEvent.id)
                .limit(self.batch)
            )
            if not self.database.urls.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            events = list(await session.scalars(query))
            if not events:
                return 0
            effects = Effects(session)
            sendgrid = [e for e in events if e.provider == "sendgrid"]
            if sendgrid:
                await effects.apply_sendgrid(sendgrid)
            for event in events:
                event.attempts += 1
                if event.provider == "stripe":
                    try:
                        async with session.begin_nested():
                            await effects.apply_stripe(event)
                    except (ValueError, KeyError, TypeError) as exc:
                        event.status = FAILED
                        event.outcome = f"{type(exc).__name__}: {exc}"
                        continue
                event.status = APPLIED
                event.applied_at = datetime.now(UTC)
            done = [(e.provider, e.type, e.status, e.occurred_at) for e in events]
        now = time.time()
        for provider, kind, status, occurred in done:
            WEBHOOK_EVENTS.labels(provider, type_label(provider, kind), status).inc()
            if status == APPLIED:
                WEBHOOK_LAG.labels(provider).observe(max(0.0, now - occurred))
        return len(done)

    async def cleanup(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention_s)
        async with self.database.write_session() as session:
            result = await session.execute(
                delete(WebhookEvent).where(
                    WebhookEvent.received_at < cutoff, WebhookEvent.status != PENDING
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
