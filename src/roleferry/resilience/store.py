"""Where breaker and rate-limit state lives: this process's memory, or Redis when
ROLEFERRY_REDIS_URL is set, so that every process shares one view of each provider.

The logic is written once, as a pure function from the old state to (new state, result);
a store applies it atomically: in memory by running it without an await in between, in Redis
with WATCH/MULTI optimistic transactions, retried on conflict a bounded number of times with
a jittered backoff. Past its TTL, state is gone. Redis writes state only when `fn` changed it,
so a refused call (state unchanged) never extends the TTL there.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis

R = TypeVar("R")
State = dict[str, Any]
Update = Callable[[State | None], tuple[State, R]]


class StateContention(RuntimeError):
    """Other processes changed the same key on every try: too much contention to go on."""


class StateStore(Protocol):
    """`shared`: other processes see the same state (so a policy keeps a local view of it)."""

    shared: bool

    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R: ...

    async def get(self, key: str) -> State | None: ...

    async def clear(self) -> None: ...


class MemoryStore:
    """One process's state; atomic because `fn` runs between two awaits."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._data: dict[str, tuple[State, float]] = {}

    def _live(self, key: str) -> State | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            del self._data[key]
            return None
        return entry[0]

    async def update(self, key: str, fn: Update[R], ttl_s: float) -> R:
        state, result = fn(self._live(key))
        self._data[key] = (state, self.clock() + ttl_s)
        return result

    async def get(self, key: str) -> State | None:
        """A shallow copy: a reader that replaces a field (pruning a list) changes no state."""
        state = self._live(key)
        return dict(state) if state is not None else None

    async def clear(self) -> None:
        self._data.clear()


class RedisStore:
    """State shared by every process on one Redis, under `prefix`."""

    shared = True

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
        """WATCH and GET go in one round trip, MULTI/SET/EXEC in another: two per update, where
        redis-py's pipeline takes three. A connection interrupted mid-exchange is dropped,
        never returned to the pool with a WATCH or a reply pending."""
        name = self.prefix + key
        pool = self.redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            for number in range(self.max_tries):
                await conn.send_packed_command(conn.pack_commands([("WATCH", name), ("GET", name)]))
                await conn.read_response()
                raw = await conn.read_response()
                old = raw.decode() if isinstance(raw, bytes) else raw
                state, result = fn(json.loads(old) if old else None)
                encoded = json.dumps(state)
                if encoded == old:
                    await conn.send_command("UNWATCH")
                    await conn.read_response()
                    return result
                ttl_ms = max(1, int(ttl_s * 1000))
                await conn.send_packed_command(
                    conn.pack_commands(
                        [("MULTI",), ("SET", name, encoded, "PX", ttl_ms), ("EXEC",)]
                    )
                )
                await conn.read_response()
                await conn.read_response()
                if await conn.read_response() is not None:
                    return result
                cap = min(self.max_backoff_s, self.backoff_s * 2**number)
                await asyncio.sleep(random.uniform(0, cap))
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        raise StateContention(f"{key}: changed by others on each of {self.max_tries} tries")

    async def get(self, key: str) -> State | None:
        raw = await self.redis.get(self.prefix + key)
        return json.loads(raw) if raw else None

    async def clear(self) -> None:
        async for name in self.redis.scan_iter(match=self.prefix + "*"):
            await self.redis.delete(name)
