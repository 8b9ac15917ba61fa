"""One policy per provider, composed once and applied to every call to it:

    deadline → breaker → rate budget → bulkhead → attempt with timeout → retry with backoff

A call never waits for the breaker or the budget: it is refused at once (`CircuitOpen`,
`BudgetExhausted` with the time until room), so the search waterfall skips to the next
provider and bulk jobs sleep durably. It may wait for a bulkhead slot, within its deadline.

The breaker counts only calls that were sent: our own refusals release their permit in a
`finally`, as does a cancelled half-open probe, so a probe's slot is never lost; a call
cancelled in flight while closed (a hedge's loser) counts as slow (see `_cancelled`). The
provider's errors are mapped before they get here (providers/errors.py `map_error`).

With a store shared by processes (Redis), a call makes no round trip to it as a rule: the
breaker goes by a local view at most `breaker_view_s` old, the budget by blocks taken from the
shared log (ratelimit.py); transitions, probes, failures and new blocks go to the store.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from roleferry.monitoring.metrics import CIRCUIT_STATE, RATE_LIMIT_REMAINING
from roleferry.resilience import testing
from roleferry.resilience.breaker import BreakerConfig, CircuitBreaker, CircuitState, Permit
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.errors import (
    BudgetExhausted,
    CallError,
    CircuitOpen,
    DeadlineExceeded,
    Refusal,
    Timeout,
)
from roleferry.resilience.ratelimit import LeaseConfig, Priority, RateLimiter, Window
from roleferry.resilience.store import StateStore

T = TypeVar("T")

__all__ = ["CallObserver", "Policy", "PolicyConfig", "Priority", "RetryConfig"]


class CallObserver(Protocol):
    """Told of every attempt that was sent (monitoring's IntegrationStats is one)."""

    def observe(
        self, provider: str, endpoint: str, duration_s: float, error_type: str | None
    ) -> None: ...


@dataclass(frozen=True)
class RetryConfig:
    """Defaults: 3 attempts in all; full-jitter backoff from 0.1 s doubling, capped at 1 s;
    a provider's Retry-After wins over the formula; never a retry that cannot finish (at least
    `min_attempt_s`, 0.2 s, of answer time) before the deadline."""

    attempts: int = 3
    base_s: float = 0.1
    max_s: float = 1.0
    min_attempt_s: float = 0.2


@dataclass(frozen=True)
class PolicyConfig:
    """Defaults: 2 s per attempt (shrunk to the deadline); at most 10 calls in flight per
    provider and process; bulk work takes at most 80% of each rate window; one user all of it
    (`user_share`, set from ROLEFERRY_USER_BUDGET_SHARE). With a shared store: another
    process's breaker transition is seen within `breaker_view_s` (0.2 s); budget is taken
    in blocks as `lease` says."""

    windows: list[Window]
    attempt_timeout_s: float = 2.0
    max_concurrency: int = 10
    bulk_share: float = 0.8
    user_share: float = 1.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    breaker_view_s: float = 0.2
    lease: LeaseConfig = field(default_factory=LeaseConfig)


AttemptFn = Callable[[float], Awaitable[T]]
HEDGE_FLOOR_S = 0.3
LATENCY_SAMPLES = 50


class Policy:
    def __init__(
        self,
        provider: str,
        config: PolicyConfig,
        store: StateStore,
        stats: CallObserver,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.config = config
        self.stats = stats
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.breaker = CircuitBreaker(
            provider,
            store,
            config.breaker,
            clock,
            on_change=_publish_state,
            view_s=config.breaker_view_s if store.shared else None,
        )
        self.limiter = RateLimiter(
            provider,
            store,
            config.windows,
            config.bulk_share,
            clock,
            config.user_share,
            lease=config.lease if store.shared else None,
        )
        self._answers: dict[str, deque[float]] = {}
        self.bulkhead = asyncio.Semaphore(config.max_concurrency)
        CIRCUIT_STATE.labels(provider).set(0)

    async def call(
        self,
        endpoint: str,
        attempt: AttemptFn[T],
        *,
        deadline: Deadline,
        priority: Priority = Priority.INTERACTIVE,
        cost: int = 1,
    ) -> T:
        """Runs `attempt(timeout_s)` under this provider's rules; raises a ProviderError."""
        retry = self.config.retry
        attempts = testing.attempts(retry.attempts)
        last_error: CallError | None = None
        began = time.perf_counter()
        for number in range(1, attempts + 1):
            if deadline.remaining() < retry.min_attempt_s:
                raise last_error or DeadlineExceeded(self.provider, f"no time left for {endpoint}")
            permit = await self.breaker.acquire()
            if not permit.permitted:
                raise CircuitOpen(self.provider, permit.retry_in)
            try:
                result = await self._attempt(endpoint, attempt, permit, deadline, priority, cost)
            except Refusal:
                raise
            except CallError as error:
                last_error = error
                delay = self._backoff(number, error)
                if (
                    not error.retryable
                    or number == attempts
                    or delay is None
                    or delay + retry.min_attempt_s > deadline.remaining()
                ):
                    _in_all(error, number, time.perf_counter() - began)
                    raise
                await testing.sleep(self.sleep, delay)
                continue
            finally:
                if not permit.settled:
                    await asyncio.shield(self.breaker.release(permit))
            return result
        raise last_error or DeadlineExceeded(self.provider, endpoint)

    async def _attempt(
        self,
        endpoint: str,
        attempt: AttemptFn[T],
        permit: Permit,
        deadline: Deadline,
        priority: Priority,
        cost: int,
    ) -> T:
        """A bulkhead slot first, then the budget, then the call: a call counts against the
        budget at the moment it is sent, not while it waits for a slot."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                await self.bulkhead.acquire()
        except TimeoutError as exc:
            raise DeadlineExceeded(self.provider, f"no free slot for {endpoint} in time") from exc
        try:
            grant = await self.limiter.try_acquire(priority, cost)
            RATE_LIMIT_REMAINING.labels(self.provider).set(grant.remaining)
            if not grant.granted:
                raise BudgetExhausted(self.provider, grant.wait_s)
            return await self._send(endpoint, attempt, permit, deadline)
        finally:
            self.bulkhead.release()

    async def _send(
        self, endpoint: str, attempt: AttemptFn[T], permit: Permit, deadline: Deadline
    ) -> T:
        timeout = min(self.config.attempt_timeout_s, deadline.remaining())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                result = await attempt(timeout)
        except TimeoutError as exc:
            error = Timeout(self.provider, f"{endpoint} did not answer within {timeout:.2f}s")
            await self._settle(endpoint, permit, started, error)
            raise error from exc
        except asyncio.CancelledError:
            if permit.state is CircuitState.CLOSED:
                await asyncio.shield(self._cancelled(endpoint, permit, started))
            raise
        except Refusal:
            raise
        except CallError as exc:
            if exc.throttled:
                await self.limiter.penalize(exc.retry_after or 1.0)
            await self._settle(endpoint, permit, started, exc)
            raise
        await self._settle(endpoint, permit, started, None)
        return result

    async def _cancelled(self, endpoint: str, permit: Permit, started: float) -> None:
        """A call cancelled in flight, as a hedged one is when its rival answers first: it
        did not answer in its usual time, so the closed breaker counts it as a slow call
        (a hanging provider then opens it instead of costing every search a hedge). A
        half-open probe is released instead (see `call`)."""
        duration = time.perf_counter() - started
        await self.breaker.record(
            permit, failed=False, duration_s=max(duration, self.config.breaker.slow_call_s)
        )
        self.stats.observe(self.provider, endpoint, duration, "cancelled")

    async def _settle(
        self, endpoint: str, permit: Permit, started: float, error: CallError | None
    ) -> None:
        """Records a call that was answered (or timed out) on the breaker and in the stats."""
        duration = time.perf_counter() - started
        await self.breaker.record(
            permit, failed=error is not None and error.counts_as_failure, duration_s=duration
        )
        self.stats.observe(self.provider, endpoint, duration, error.kind if error else None)

    def _backoff(self, number: int, error: CallError) -> float | None:
        if error.throttled and error.retry_after is not None:
            return error.retry_after
        retry = self.config.retry
        return self.rng.uniform(0, min(retry.max_s, retry.base_s * 2 ** (number - 1)))

    async def availability(self, priority: Priority) -> CallError | None:
        """Why a call would be refused right now without sending it, with the true time until
        it would go, or None if it may go."""
        opens_in = await self.breaker.opens_in()
        if opens_in > 0:
            return CircuitOpen(self.provider, opens_in)
        left, wait = await self.limiter.room(priority)
        if left <= 0:
            return BudgetExhausted(self.provider, wait)
        return None

    def observe_answer(self, operation: str, seconds: float) -> None:
        """An operation (a search, an email look-up) that answered, and how long it took."""
        samples = self._answers.setdefault(operation, deque(maxlen=LATENCY_SAMPLES))
        samples.append(seconds)

    def hedge_after_s(self, operation: str) -> float:
        """When to start the next provider beside this one: its p95 over the last answers,
        never under 0.3 s."""
        samples = sorted(self._answers.get(operation, ()))
        if len(samples) < 5:
            return HEDGE_FLOOR_S
        return max(HEDGE_FLOOR_S, samples[min(len(samples) - 1, int(0.95 * len(samples)))])


def _publish_state(provider: str, state: CircuitState) -> None:
    CIRCUIT_STATE.labels(provider).set(int(state))


def _in_all(error: CallError, attempts: int, elapsed_s: float) -> None:
    """The last attempt's own words, and what the whole call took: an attempt's timeout and
    the time the caller saw differ by the retries and the waits for a slot or a budget."""
    error.message = (
        f"{error.message} (attempt {attempts}; {elapsed_s:.2f}s in all for this provider, "
        "retries and waits included)"
    )
    error.args = (f"{error.provider}: {error.message}",)
