"""Where breaker and rate-limit state lives: this process's memory, or Redis when
ROLEFERRY_REDIS_URL is set, so that every process shares one view of each provider.

The logic is written once, as a pure function from the old state to (new state, result);
a store applies it atomically: in memory by running it without an await in between, in Redis
with WATCH/MULTI optimistic transactions, retried on conflict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

R = TypeVar("R")
State = dict[str, Any]
Update = Callable[[State | None], tuple[State, R]]


class StateStore(Protocol):
    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R: ...

    async def get(self, key: str) -> State | None: ...

    async def clear(self) -> None: ...


class MemoryStore:
    """One process's state; atomic because `fn` runs between two awaits."""

    def __init__(self) -> None:
        self._data: dict[str, State] = {}

    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R:
        state, result = fn(self._data.get(key))
        self._data[key] = state
        return result

    async def get(self, key: str) -> State | None:
        return self._data.get(key)

    async def clear(self) -> None:
        self._data.clear()


class RedisStore:
    """State shared by every process on one Redis, under `prefix`."""

    def __init__(self, redis: Redis, prefix: str = "roleferry:") -> None:
        self.redis = redis
        self.prefix = prefix

    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R:
        name = self.prefix + key
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(name)
                    raw = await pipe.get(name)
                    state, result = fn(json.loads(raw) if raw else None)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(name, json.dumps(state), px=max(1, int(ttl_s * 1000)))
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    async def get(self, key: str) -> State | None:
        raw = await self.redis.get(self.prefix + key)
        return json.loads(raw) if raw else None

    async def clear(self) -> None:
        async for name in self.redis.scan_iter(match=self.prefix + "*"):
            await self.redis.delete(name)
