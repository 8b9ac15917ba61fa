"""An asyncio circuit breaker with resilience4j's semantics (pybreaker does not support
coroutines: decorating an `async def` never counts a failure).

CLOSED: every call goes; outcomes fill a count-based sliding window. Once the window holds
`minimum_calls`, a failure rate or a slow-call rate at or over its threshold opens it.
OPEN: no call goes for `open_s`; callers get `CircuitOpen` at once, without waiting.
HALF_OPEN: `half_open_calls` probes go; when all have answered, the breaker closes if their
failure and slow rates are under the thresholds, else opens again. Other callers are refused
while probes are out.

Only real calls count (resilience4j's `ignoreExceptions`): a permit whose call never went
(our own refusal: budget spent, no time left) or was cancelled is `release`d, which frees a
probe's slot and records nothing. Each entry into HALF_OPEN starts a new generation, so a
permit from an earlier one can neither free nor fill a slot of the current one.

Only `Unavailable`, `Timeout` and `BadResponse` count as failures: a 429 or a wrong key says
nothing about the provider's health. State lives in a `StateStore` (Redis when configured).

With `view_s` set (a store shared by processes), a call reads no state: it uses this process's
copy, which is what this process last wrote or read, re-read in the background once it is
`view_s / 2` old and awaited once it is `view_s` old. A transition made by another process is
therefore seen by every call here that starts more than `view_s` after it. Only transitions,
half-open probes and outcomes that change the state write (and so go to the store).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from roleferry.resilience.singleflight import SingleFlight
from roleferry.resilience.store import State, StateStore, Update

R = TypeVar("R")


class CircuitState(IntEnum):
    """Values are what `roleferry_circuit_state` reports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class BreakerConfig:
    """Defaults, with their units (resilience4j's names in brackets):

    - window: 20 calls [slidingWindowSize, COUNT_BASED]
    - minimum_calls: 5 [minimumNumberOfCalls]
    - failure_rate: 0.5 [failureRateThreshold]
    - slow_call_s: 2.0 seconds [slowCallDurationThreshold]
    - slow_rate: 0.8 [slowCallRateThreshold]
    - open_s: 30 seconds [waitDurationInOpenState]
    - half_open_calls: 2 [permittedNumberOfCallsInHalfOpenState]
    """

    window: int = 20
    minimum_calls: int = 5
    failure_rate: float = 0.5
    slow_call_s: float = 2.0
    slow_rate: float = 0.8
    open_s: float = 30.0
    half_open_calls: int = 2


@dataclass
class Permit:
    """Leave to make one call; `settled` once its outcome is recorded or it is released."""

    state: CircuitState
    permitted: bool
    retry_in: float = 0.0
    generation: int = 0
    settled: bool = False


def _fresh() -> State:
    return {
        "state": int(CircuitState.CLOSED),
        "window": [],
        "open_until": 0.0,
        "probes": 0,
        "results": [],
        "generation": 0,
    }


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        store: StateStore,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str, CircuitState], None] | None = None,
        view_s: float | None = None,
    ) -> None:
        self.provider = provider
        self.store = store
        self.config = config or BreakerConfig()
        self.clock = clock
        self.on_change = on_change
        self.key = f"breaker:{provider}"
        self.view_s = view_s
        self._view: State | None = None
        self._view_at = -math.inf
        self._writes = 0
        self._reading = SingleFlight()

    @property
    def _ttl(self) -> float:
        return max(3600.0, self.config.open_s * 4)

    async def _current(self) -> State | None:
        """The state calls go by: the store's, or with `view_s` this process's copy of it,
        never older than `view_s` (see the module's docstring)."""
        if self.view_s is None:
            return await self.store.get(self.key)
        age = time.monotonic() - self._view_at
        if age >= self.view_s:
            await self._reading.join(self._read)
        elif age >= self.view_s / 2:
            self._reading.start(self._read)
        return self._view

    async def _read(self) -> None:
        """Re-reads the copy, unless this process wrote a newer one meanwhile."""
        writes, at = self._writes, time.monotonic()
        state = await self.store.get(self.key)
        if writes == self._writes:
            self._view, self._view_at = state, at

    async def _update(self, step: Update[R]) -> R:
        """`store.update`; what it wrote (or found unchanged) becomes this process's copy."""
        written: list[State] = []

        def keeping(raw: State | None) -> tuple[State, R]:
            s, result = step(raw)
            written[:] = [s]
            return s, result

        at = time.monotonic()
        result = await self.store.update(self.key, keeping, self._ttl)
        self._writes += 1
        self._view, self._view_at = written[0], at
        return result

    async def state(self) -> CircuitState:
        """The state as callers would see it now (OPEN past its time reads as HALF_OPEN)."""
        raw = await self._current() or _fresh()
        state = CircuitState(raw["state"])
        if state is CircuitState.OPEN and self.clock() >= raw["open_until"]:
            return CircuitState.HALF_OPEN
        return state

    async def opens_in(self) -> float:
        """Seconds until this breaker lets a call go: 0 unless it is open (or half-open with
        every probe out, when the probes' answers decide; then its open time, as an upper
        bound)."""
        raw = await self._current() or _fresh()
        state = CircuitState(raw["state"])
        if state is CircuitState.OPEN:
            return max(0.0, float(raw["open_until"]) - self.clock())
        if state is CircuitState.HALF_OPEN and raw["probes"] >= self.config.half_open_calls:
            return self.config.open_s
        return 0.0

    async def acquire(self) -> Permit:
        """Asks to make one call; never waits. Closed, or open before its time, it only reads
        (the copy, with `view_s`): neither changes anything for a call that starts."""
        now = self.clock()
        config = self.config
        current = await self._current()
        if current is None or current["state"] == int(CircuitState.CLOSED):
            return Permit(
                CircuitState.CLOSED, True, generation=(current or {}).get("generation", 0)
            )
        if current["state"] == int(CircuitState.OPEN) and now < current["open_until"]:
            return Permit(CircuitState.OPEN, False, current["open_until"] - now)

        def step(raw: State | None) -> tuple[State, Permit]:
            s = raw or _fresh()
            state = CircuitState(s["state"])
            if state is CircuitState.OPEN:
                if now < s["open_until"]:
                    return s, Permit(state, False, s["open_until"] - now)
                s.update(
                    state=int(CircuitState.HALF_OPEN),
                    probes=0,
                    results=[],
                    generation=s.get("generation", 0) + 1,
                )
                state = CircuitState.HALF_OPEN
            generation = s.get("generation", 0)
            if state is CircuitState.HALF_OPEN:
                if s["probes"] >= config.half_open_calls:
                    return s, Permit(state, False, 1.0, generation, settled=True)
                s["probes"] += 1
            return s, Permit(state, True, generation=generation)

        permit = await self._update(step)
        if permit.state is CircuitState.HALF_OPEN and self.on_change:
            self.on_change(self.provider, CircuitState.HALF_OPEN)
        return permit

    async def release(self, permit: Permit) -> None:
        """Gives back a permit whose call was not made or not finished (refused by our own
        policy, cancelled): neither a success nor a failure; a probe's slot is free again."""
        if permit.settled or not permit.permitted:
            return
        permit.settled = True
        if permit.state is not CircuitState.HALF_OPEN:
            return

        def step(raw: State | None) -> tuple[State, None]:
            s = raw or _fresh()
            if (
                s["state"] == int(CircuitState.HALF_OPEN)
                and s.get("generation", 0) == permit.generation
                and s["probes"] > 0
            ):
                s["probes"] -= 1
            return s, None

        await self._update(step)

    async def record(self, permit: Permit, *, failed: bool, duration_s: float) -> CircuitState:
        """Adds one call's outcome; returns the state after it."""
        permit.settled = True
        now = self.clock()
        config = self.config
        outcome = [1 if failed else 0, 1 if duration_s >= config.slow_call_s else 0]

        def tripped(outcomes: list[list[int]]) -> bool:
            n = len(outcomes)
            fails = sum(o[0] for o in outcomes) / n
            slow = sum(o[1] for o in outcomes) / n
            return fails >= config.failure_rate or slow >= config.slow_rate

        def step(raw: State | None) -> tuple[State, CircuitState]:
            s = raw or _fresh()
            state = CircuitState(s["state"])
            if (
                state is CircuitState.HALF_OPEN
                and permit.state is CircuitState.HALF_OPEN
                and s.get("generation", 0) == permit.generation
            ):
                s["results"].append(outcome)
                if len(s["results"]) >= config.half_open_calls:
                    if tripped(s["results"]):
                        s.update(state=int(CircuitState.OPEN), open_until=now + config.open_s)
                    else:
                        s.update({**_fresh(), "generation": s.get("generation", 0)})
                return s, CircuitState(s["state"])
            if state is CircuitState.CLOSED and permit.state is CircuitState.CLOSED:
                window = [*s["window"], outcome][-config.window :]
                s["window"] = window
                if len(window) >= config.minimum_calls and tripped(window):
                    s.update(
                        state=int(CircuitState.OPEN),
                        open_until=now + config.open_s,
                        window=[],
                        probes=0,
                        results=[],
                    )
            return s, CircuitState(s["state"])

        current = await self._current()
        if current is not None:
            # A dry run on a copy: `step` replaces every field it changes but `results`.
            unchanged, state = step({**current, "results": list(current["results"])})
            if unchanged == current:
                return state
        new_state = await self._update(step)
        if new_state is not permit.state and self.on_change:
            self.on_change(self.provider, new_state)
        return new_state
