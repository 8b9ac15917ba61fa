"""One background refresh at a time per thing refreshed (a breaker's view, a budget's block):
callers that need its result join the one in flight, callers that only want it under way do
not wait. Its failure reaches those who wait, and is never left unretrieved on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class SingleFlight:
    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, make: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        """The refresh in flight, or a new one from `make`."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(make())
            self._task.add_done_callback(_retrieve)
        return self._task

    async def join(self, make: Callable[[], Awaitable[Any]]) -> None:
        """Waits for the refresh in flight (or a new one); a cancelled waiter leaves it
        running for the others."""
        await asyncio.shield(self.start(make))


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
