"""Where breaker and rate-limit state lives: this process's memory, or Redis when
ROLEFERRY_REDIS_URL is set, so that every process shares one view of each provider.

The logic is written once, as a pure function from the old state to (new state, result);
a store applies it atomically: in memory by running it without an await in between, in Redis
with WATCH/MULTI optimistic transactions, retried on conflict a bounded number of times with
a jittered backoff. Both stores keep state as JSON and write it only when `fn` changed it, so
a refused call (state unchanged) never extends the TTL; past its TTL, state is gone.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

R = TypeVar("R")
State = dict[str, Any]
Update = Callable[[State | None], tuple[State, R]]


class StateContention(RuntimeError):
    """Other processes changed the same key on every try: too much contention to go on."""


class StateStore(Protocol):
    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R: ...

    async def get(self, key: str) -> State | None: ...

    async def clear(self) -> None: ...


class MemoryStore:
    """One process's state; atomic because `fn` runs between two awaits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._data: dict[str, tuple[str, float]] = {}

    def _raw(self, key: str) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            del self._data[key]
            return None
        return entry[0]

    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R:
        raw = self._raw(key)
        state, result = fn(json.loads(raw) if raw is not None else None)
        encoded = json.dumps(state)
        if encoded != raw:
            self._data[key] = (encoded, self.clock() + ttl_s)
        return result

    async def get(self, key: str) -> State | None:
        raw = self._raw(key)
        return json.loads(raw) if raw is not None else None

    async def clear(self) -> None:
        self._data.clear()


class RedisStore:
    """State shared by every process on one Redis, under `prefix`."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "roleferry:",
        *,
        max_tries: int = 50,
        backoff_s: float = 0.001,
        max_backoff_s: float = 0.05,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_tries = max_tries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R:
        name = self.prefix + key
        async with self.redis.pipeline(transaction=True) as pipe:
            for number in range(self.max_tries):
                try:
                    await pipe.watch(name)
                    raw = await pipe.get(name)
                    old = raw.decode() if isinstance(raw, bytes) else raw
                    state, result = fn(json.loads(old) if old else None)
                    encoded = json.dumps(state)
                    if encoded == old:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return result
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(name, encoded, px=max(1, int(ttl_s * 1000)))
                    await pipe.execute()
                    return result
                except WatchError:
                    cap = min(self.max_backoff_s, self.backoff_s * 2**number)
                    await asyncio.sleep(random.uniform(0, cap))
        raise StateContention(f"{key}: changed by others on each of {self.max_tries} tries")

    async def get(self, key: str) -> State | None:
        raw = await self.redis.get(self.prefix + key)
        return json.loads(raw) if raw else None

    async def clear(self) -> None:
        async for name in self.redis.scan_iter(match=self.prefix + "*"):
            await self.redis.delete(name)
