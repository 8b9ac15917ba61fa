"""One rate budget per provider account, shared by every process and by both the interactive
(search) and the bulk (jobs) paths, so no call is sent that would exceed the provider's limit.

Each window is a sliding log: a call goes only if fewer than `limit` calls went in the last
`period_s` (and a grace for the trip). Any interval of that length then holds at most `limit`
calls, so the provider's own fixed windows, wherever their edges fall, never see more: zero
429s by construction.
Bulk work may use at most `bulk_share` (default 80%) of each window; interactive calls may use
all of it. Each user (the budget owner set with `owner()` around the calls made for them) may
use at most `user_share` of each window, so one user cannot spend everyone's budget.
A 429 that still arrives blocks the budget for its Retry-After; a provider's own
count of requests left (Apollo's `x-*-requests-left`) pulls ours down to match.

With a `LeaseConfig` (a store shared by processes), a call does not go to the store: the
process takes budget in blocks, one transaction per block, and spends it locally. A block's
calls are logged at the moment it stops being usable (`stamp`, at most `hold_s` ahead), so each
call sent from it is logged no earlier than it is sent and counts in the log at least as long
as the provider counts it: the proof above holds, cluster-wide, whatever the block sizes. A
block starts at one call and doubles while the next call comes before the last block would
have expired, up to `block_share` of the tightest window; the next block is taken in the
background once half of this one is spent. Calls left in an expired block go back to the
shared log with the next block taken, or expire with the window.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

from roleferry.resilience.singleflight import SingleFlight
from roleferry.resilience.store import State, StateStore


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


GRACE_S = 0.25
MAX_BLOCK = 1000
_owner: ContextVar[str | None] = ContextVar("budget_owner", default=None)


@contextmanager
def owner(user_id: str | None) -> Iterator[None]:
    """Calls made inside count against `user_id`'s share of every provider's budget."""
    token = _owner.set(user_id)
    try:
        yield
    finally:
        _owner.reset(token)


def current_owner() -> str | None:
    return _owner.get()


@dataclass(frozen=True)
class Window:
    limit: int
    period_s: float

    @property
    def span(self) -> float:
        """How long a call counts: the period and a grace of 0.25 s, so that a call granted
        just before the provider's window edge and arriving just after it cannot make the
        provider count one too many in its next window."""
        return self.period_s + GRACE_S

    @classmethod
    def parse(cls, spec: str) -> list[Window]:
        """`"100/3600"` or `"15/1,500/60"` → windows (limit per seconds)."""
        windows = []
        for part in spec.split(","):
            limit, _, period = part.strip().partition("/")
            try:
                windows.append(cls(int(limit), float(period or 1)))
            except ValueError:
                windows = []
                break
        if not windows or any(w.limit < 1 or w.period_s <= 0 for w in windows):
            raise ValueError(f"rate limit must look like 100/3600 or 15/1,500/60: {spec!r}")
        return windows


@dataclass(frozen=True)
class Grant:
    granted: bool
    wait_s: float
    remaining: int


@dataclass(frozen=True)
class LeaseConfig:
    """Budget taken in blocks (see the module's docstring). Defaults: a block is usable for
    `hold_share` (20%) of the shortest window's period, at most `hold_s` (1 s); it holds at
    most `block_share` (20%) of the tightest window's cap, so one process never holds more
    than 40% of a window (a block and the next one) and that only for `hold_s`."""

    hold_s: float = 1.0
    hold_share: float = 0.2
    block_share: float = 0.2


@dataclass
class _Block:
    stamp: float
    size: int
    left: int


@dataclass
class _Pool:
    """One priority's and owner's blocks in this process, and when its last calls went."""

    user: str | None
    blocks: list[_Block] = field(default_factory=list)
    taken: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_BLOCK))
    last_size: int = 0
    leasing: SingleFlight = field(default_factory=SingleFlight)

    def left(self, now: float) -> int:
        return sum(b.left for b in self.blocks if now < b.stamp)


class RateLimiter:
    def __init__(
        self,
        provider: str,
        store: StateStore,
        windows: list[Window],
        bulk_share: float = 0.8,
        clock: Callable[[], float] = time.time,
        user_share: float = 1.0,
        lease: LeaseConfig | None = None,
    ) -> None:
        self.provider = provider
        self.store = store
        self.windows = windows
        self.bulk_share = bulk_share
        self.user_share = user_share
        self.clock = clock
        self.lease = lease
        self.key = f"ratelimit:{provider}"
        self._ttl = max(w.period_s for w in windows) + 60
        self._pools: dict[tuple[Priority, str | None], _Pool] = {}
        self._returns: list[tuple[float, int, str | None]] = []
        self._shared_left = 0

    def _prune(self, s: State, now: float) -> None:
        """Drops calls past the longest window; every log is left sorted (`_room` bisects)."""
        since = now - max(w.span for w in self.windows)
        s["calls"] = _after(sorted(s["calls"]), since)
        users = s.get("users") or {}
        kept = {u: _after(sorted(calls), since) for u, calls in users.items()}
        s["users"] = {u: calls for u, calls in kept.items() if calls}

    def _room(
        self, s: State, now: float, priority: Priority, cost: int, user: str | None
    ) -> tuple[float, float]:
        """(seconds until `cost` calls fit, calls left in the tightest window) for this
        priority and user: the wait is exact, the earliest moment every window has room."""
        if now < s["blocked_until"]:
            return s["blocked_until"] - now, 0
        wait = 0.0
        remaining = math.inf
        mine = s.get("users", {}).get(user, []) if user else []
        for window in self.windows:
            logs = [(s["calls"], self.cap(s, window, priority))]
            if user and self.user_share < 1:
                logs.append((mine, self.user_cap(s, window)))
            for log, cap in logs:
                recent = _after(log, now - window.span)
                over = len(recent) + cost - cap
                if over > 0:
                    wait = max(
                        wait, window.span if cost > cap else recent[over - 1] + window.span - now
                    )
                remaining = min(remaining, cap - len(recent))
        return wait, max(0, remaining)

    async def try_acquire(self, priority: Priority, cost: int = 1) -> Grant:
        """Takes `cost` calls from every window now, or says how long until there is room."""
        if self.lease is not None:
            return await self._from_blocks(priority, cost)
        now = self.clock()
        user = current_owner()

        def step(raw: State | None) -> tuple[State, Grant]:
            s = raw or {"calls": [], "blocked_until": 0.0}
            self._prune(s, now)
            wait, remaining = self._room(s, now, priority, cost, user)
            if wait > 0:
                return s, Grant(False, wait, int(remaining))
            s["calls"].extend([now] * cost)
            s["calls"].sort()
            if user and self.user_share < 1:
                s["users"].setdefault(user, []).extend([now] * cost)
            return s, Grant(True, 0.0, int(remaining - cost))

        return await self.store.update(self.key, step, self._ttl)

    def _pool(self, priority: Priority) -> _Pool:
        user = current_owner() if self.user_share < 1 else None
        return self._pools.setdefault((priority, user), _Pool(user))

    def _take(self, pool: _Pool, now: float, cost: int) -> bool:
        """Spends `cost` calls from the pool's usable blocks, earliest first; expired blocks
        are dropped, their calls left queued to go back with the next block taken."""
        for block in [b for b in pool.blocks if now >= b.stamp]:
            pool.blocks.remove(block)
            if block.left:
                self._returns.append((block.stamp, block.left, pool.user))
        if pool.left(now) < cost:
            return False
        for block in sorted(pool.blocks, key=lambda b: b.stamp):
            spent = min(block.left, cost)
            block.left -= spent
            cost -= spent
            if not block.left:
                pool.blocks.remove(block)
        return True

    async def _from_blocks(self, priority: Priority, cost: int) -> Grant:
        pool = self._pool(priority)
        while True:
            now = self.clock()
            if self._take(pool, now, cost):
                pool.taken.extend([now] * cost)
                left = pool.left(now)
                if pool.last_size > 1 and left <= pool.last_size // 2:
                    pool.leasing.start(partial(self._lease, pool, priority, 0))
                return Grant(True, 0.0, left + self._shared_left)
            if pool.leasing.busy:
                await pool.leasing.join(partial(self._lease, pool, priority, cost))
                continue
            refusal: list[Grant] = []
            await pool.leasing.join(partial(self._lease, pool, priority, cost, refusal))
            if refusal:
                return refusal[0]

    def _hold(self) -> float:
        assert self.lease is not None
        return min(self.lease.hold_s, self.lease.hold_share * min(w.period_s for w in self.windows))

    def _block_size(self, pool: _Pool, priority: Priority, now: float, hold: float) -> int:
        """The calls this pool took in the last hold time (what a block will last for at
        that rate), within one call and the cap's `block_share`."""
        since = now - hold
        recent = sum(1 for t in pool.taken if t > since)
        return max(1, min(recent, self._max_block(priority)))

    def _max_block(self, priority: Priority) -> int:
        assert self.lease is not None
        share = self.lease.block_share
        caps = (self._cap_of(w, priority) for w in self.windows)
        return max(1, min(MAX_BLOCK, *(math.floor(cap * share) for cap in caps)))

    def _cap_of(self, window: Window, priority: Priority) -> int:
        return window.limit if priority is Priority.INTERACTIVE else self.cap({}, window, priority)

    async def _lease(
        self, pool: _Pool, priority: Priority, cost: int, refusal: list[Grant] | None = None
    ) -> None:
        """Takes the pool's next block (at least `cost` calls) from the shared log, giving
        back the calls left in expired blocks; a refusal goes into `refusal`."""
        now = self.clock()
        hold = self._hold()
        stamp = now + hold
        want = max(cost, self._block_size(pool, priority, now, hold))
        returns, self._returns = self._returns, []
        user = pool.user

        def step(raw: State | None) -> tuple[State, tuple[Grant, int]]:
            s = raw or {"calls": [], "blocked_until": 0.0}
            _give_back(s, returns)
            self._prune(s, now)
            wait, remaining = self._room(s, now, priority, max(cost, 1), user)
            if wait > 0:
                return s, (Grant(False, wait, int(remaining)), 0)
            size = int(min(want, remaining))
            s["calls"].extend([stamp] * size)
            s["calls"].sort()
            if user is not None:
                s["users"].setdefault(user, []).extend([stamp] * size)
            return s, (Grant(True, 0.0, int(remaining - size)), size)

        try:
            grant, size = await self.store.update(self.key, step, self._ttl)
        except BaseException:
            self._returns.extend(returns)
            raise
        self._shared_left = grant.remaining
        if size:
            pool.blocks.append(_Block(stamp, size, size))
            pool.last_size = size
        elif refusal is not None:
            refusal.append(grant)

    async def penalize(self, retry_after_s: float) -> None:
        """A 429 arrived anyway: no call goes for the time the provider asked."""
        until = self.clock() + max(0.0, retry_after_s)
        for pool in self._pools.values():
            self._returns.extend((b.stamp, b.left, pool.user) for b in pool.blocks if b.left)
            pool.blocks.clear()

        def step(raw: State | None) -> tuple[State, None]:
            s = raw or {"calls": [], "blocked_until": 0.0}
            s["blocked_until"] = max(s["blocked_until"], until)
            return s, None

        await self.store.update(self.key, step, self._ttl)

    async def observe_remaining(self, limit: int, remaining: int, period_s: float) -> None:
        """The provider says `remaining` of its `limit` calls are left in its window of
        `period_s`. If it counted more calls than we did (another client on the same account),
        count them too; if its limit is lower than ours, the room left is what it says. Calls
        this process holds in blocks are logged but not sent, so they are not ours yet (those
        other processes hold, at most two blocks each, are not known here)."""
        now = self.clock()
        window = next((w for w in self.windows if abs(w.period_s - period_s) < 1e-6), None)
        if window is None:
            return
        held = sum(pool.left(now) for pool in self._pools.values())

        def step(raw: State | None) -> tuple[State, None]:
            s = raw or {"calls": [], "blocked_until": 0.0}
            self._prune(s, now)
            s.setdefault("limits", {})[_key(window)] = limit
            ours = len(_after(s["calls"], now - window.span)) - held
            missing = (self._limit(s, window) - remaining) - ours
            if missing > 0:
                s["calls"].extend([now] * missing)
                s["calls"].sort()
            return s, None

        await self.store.update(self.key, step, self._ttl)

    @staticmethod
    def _limit(s: State, window: Window) -> int:
        """Ours, or the provider's own when it told us a lower one."""
        return min(window.limit, int(s.get("limits", {}).get(_key(window), window.limit)))

    def cap(self, s: State, window: Window, priority: Priority) -> int:
        limit = self._limit(s, window)
        if priority is Priority.INTERACTIVE:
            return limit
        return max(1, math.floor(limit * self.bulk_share))

    def user_cap(self, s: State, window: Window) -> int:
        return max(1, math.floor(self._limit(s, window) * self.user_share))

    async def room(self, priority: Priority = Priority.INTERACTIVE) -> tuple[int, float]:
        """(calls this priority and the current owner may still make now in the tightest
        window, seconds until the next one may go: 0 when there is room). With blocks, the
        calls left in this process's blocks count, and while there are some the shared part
        is as of the last block taken (no round trip)."""
        now = self.clock()
        if self.lease is not None and (held := self._pool(priority).left(now)):
            return held + self._shared_left, 0.0
        s = await self.store.get(self.key) or {"calls": [], "blocked_until": 0.0}
        self._prune(s, now)
        wait, remaining = self._room(s, now, priority, 1, current_owner())
        return int(remaining), wait

    async def remaining(self, priority: Priority = Priority.INTERACTIVE) -> int:
        """Calls this priority (and the current owner) may still make now."""
        return (await self.room(priority))[0]


def _key(window: Window) -> str:
    return f"{window.period_s:g}"


def _after(log: list[float], since: float) -> list[float]:
    """The calls of a sorted log made after `since`."""
    return log[bisect_right(log, since) :]


def _give_back(s: State, returns: list[tuple[float, int, str | None]]) -> None:
    """Removes calls logged for blocks that expired unspent (a call logged at the same time
    by another process is the same to the log)."""
    for stamp, count, user in returns:
        logs = [s["calls"]]
        if user is not None and user in s.get("users", {}):
            logs.append(s["users"][user])
        for log in logs:
            for _ in range(count):
                if stamp not in log:
                    break
                log.remove(stamp)
