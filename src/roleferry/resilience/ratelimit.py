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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from roleferry.resilience.store import State, StateStore


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


GRACE_S = 0.25
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


class RateLimiter:
    def __init__(
        self,
        provider: str,
        store: StateStore,
        windows: list[Window],
        bulk_share: float = 0.8,
        clock: Callable[[], float] = time.time,
        user_share: float = 1.0,
    ) -> None:
        self.provider = provider
        self.store = store
        self.windows = windows
        self.bulk_share = bulk_share
        self.user_share = user_share
        self.clock = clock
        self.key = f"ratelimit:{provider}"
        self._ttl = max(w.period_s for w in windows) + 60

    def _prune(self, s: State, now: float) -> None:
        longest = max(w.span for w in self.windows)
        s["calls"] = [t for t in s["calls"] if t > now - longest]
        users = s.get("users") or {}
        kept = {u: [t for t in calls if t > now - longest] for u, calls in users.items()}
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
                recent = [t for t in log if t > now - window.span]
                over = len(recent) + cost - cap
                if over > 0:
                    wait = max(
                        wait, window.span if cost > cap else recent[over - 1] + window.span - now
                    )
                remaining = min(remaining, cap - len(recent))
        return wait, max(0, remaining)

    async def try_acquire(self, priority: Priority, cost: int = 1) -> Grant:
        """Takes `cost` calls from every window now, or says how long until there is room."""
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

    async def penalize(self, retry_after_s: float) -> None:
        """A 429 arrived anyway: no call goes for the time the provider asked."""
        until = self.clock() + max(0.0, retry_after_s)

        def step(raw: State | None) -> tuple[State, None]:
            s = raw or {"calls": [], "blocked_until": 0.0}
            s["blocked_until"] = max(s["blocked_until"], until)
            return s, None

        await self.store.update(self.key, step, self._ttl)

    async def observe_remaining(self, limit: int, remaining: int, period_s: float) -> None:
        """The provider says `remaining` of its `limit` calls are left in its window of
        `period_s`. If it counted more calls than we did (another client on the same account),
        count them too; if its limit is lower than ours, the room left is what it says."""
        now = self.clock()
        window = next((w for w in self.windows if abs(w.period_s - period_s) < 1e-6), None)
        if window is None:
            return

        def step(raw: State | None) -> tuple[State, None]:
            s = raw or {"calls": [], "blocked_until": 0.0}
            self._prune(s, now)
            s.setdefault("limits", {})[_key(window)] = limit
            ours = sum(1 for t in s["calls"] if t > now - window.span)
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
        window, seconds until the next one may go: 0 when there is room)."""
        now = self.clock()
        s = await self.store.get(self.key) or {"calls": [], "blocked_until": 0.0}
        self._prune(s, now)
        wait, remaining = self._room(s, now, priority, 1, current_owner())
        return int(remaining), wait

    async def remaining(self, priority: Priority = Priority.INTERACTIVE) -> int:
        """Calls this priority (and the current owner) may still make now."""
        return (await self.room(priority))[0]


def _key(window: Window) -> str:
    return f"{window.period_s:g}"
