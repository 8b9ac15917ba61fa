"""Reconciliation on a schedule, in the server: every `ROLEFERRY_RECONCILE_INTERVAL_S`."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from roleferry.runtime import Runtime

log = structlog.get_logger(__name__)


class ReconcileSchedule:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.runtime.settings.reconcile_interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="payments-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        from roleferry.payments.service import reconcile

        while True:
            await asyncio.sleep(self.runtime.settings.reconcile_interval_s)
            try:
                await reconcile(self.runtime)
            except Exception as exc:  # one failed run must not end the schedule
                log.warning("payments_reconcile_failed", error=type(exc).__name__)
