"""Processes sharing one Redis, each with its local view: budget taken in blocks never lets
the cluster exceed a provider's limit, unspent blocks go back, and a breaker opened by one
process is seen by the others within the view's bound."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers.errors import Unavailable
from roleferry.resilience.breaker import BreakerConfig, CircuitState
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.errors import CircuitOpen
from roleferry.resilience.policy import Policy, PolicyConfig
from roleferry.resilience.ratelimit import LeaseConfig, Priority, RateLimiter, Window
from roleferry.resilience.store import RedisStore
from roleferry.resilience.testing import set_testing

T = TypeVar("T")
WINDOWS = [Window.parse("20/1"), Window.parse("20/1,30/3")]
LEASE = LeaseConfig()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _with_redis(url: str, body: Callable[[Redis, str], Awaitable[T]]) -> T:
    redis = Redis.from_url(url)
    prefix = f"rf-shared-{uuid.uuid4().hex}:"
    try:
        return await body(redis, prefix)
    finally:
        await RedisStore(redis, prefix).clear()
        await redis.aclose()


def _limiters(redis: Redis, prefix: str, clock: Clock, windows: list[Window]) -> list[RateLimiter]:
    """Two processes' limiters: one Redis, a store and a local pool each."""
    return [
        RateLimiter("p", RedisStore(redis, prefix), windows, 0.8, clock, lease=LEASE)
        for _ in range(2)
    ]


def _most_in_any_window(times: list[float], span_s: float) -> int:
    ordered = sorted(times)
    return max(
        (sum(1 for u in ordered if t <= u < t + span_s) for t in ordered),
        default=0,
    )


CALLS = st.tuples(
    st.just("calls"), st.integers(0, 1), st.sampled_from(list(Priority)), st.integers(1, 8)
)
TICK = st.tuples(
    st.just("tick"), st.none(), st.none(), st.sampled_from([0.01, 0.05, 0.2, 1.2, 1.3])
)
SETTLE = st.tuples(st.just("settle"), st.none(), st.none(), st.none())


@pytest.mark.redis
@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    windows=st.sampled_from(WINDOWS),
    steps=st.lists(st.one_of(CALLS, CALLS, TICK, SETTLE), max_size=80),
)
@example(  # a call from a block held 0.15 s, then a full window as soon as the log allows
    windows=WINDOWS[0],
    steps=[
        *[("calls", 0, Priority.INTERACTIVE, 8)] * 2,
        ("calls", 1, Priority.INTERACTIVE, 8),
        *[("tick", None, None, 0.05)] * 3,
        ("calls", 0, Priority.INTERACTIVE, 1),
        ("tick", None, None, 1.2),
        *[("calls", 1, Priority.INTERACTIVE, 8)] * 3,
    ],
)
def test_blocks_never_let_two_processes_exceed_any_window(
    redis_url: str, windows: list[Window], steps: list[tuple[str, Any, Any, Any]]
) -> None:
    """Whatever the order of calls, clock moves and background block-taking, the calls
    granted by two processes together stay within every window (the period and the trip's
    grace, as a single process's log guarantees), and bulk within its share."""

    async def body(redis: Redis, prefix: str) -> None:
        clock = Clock()
        limiters = _limiters(redis, prefix, clock, windows)
        granted: dict[Priority, list[float]] = {p: [] for p in Priority}
        for kind, index, priority, amount in steps:
            if kind == "tick":
                clock.now += amount
            elif kind == "settle":
                await asyncio.sleep(0.01)
            else:
                for _ in range(amount):
                    if (await limiters[index].try_acquire(priority)).granted:
                        granted[priority].append(clock.now)
        every = granted[Priority.INTERACTIVE] + granted[Priority.BULK]
        for window in windows:
            assert _most_in_any_window(every, window.span) <= window.limit
            bulk_cap = int(window.limit * 0.8)
            assert _most_in_any_window(granted[Priority.BULK], window.span) <= bulk_cap

    asyncio.run(_with_redis(redis_url, body))


@pytest.mark.redis
async def test_one_window_is_used_in_full_between_two_processes(redis_url: str) -> None:
    """Calls left in one process's expired blocks go back to the shared log: once they have
    expired, the window's every call is made by one process or the other (without giving
    back, the calls still held when the first stopped would be lost until the window ends)."""

    async def body(redis: Redis, prefix: str) -> list[int]:
        clock = Clock()
        limiters = [
            RateLimiter("p", RedisStore(redis, prefix), [Window(10, 60)], clock=clock, lease=LEASE)
            for _ in range(2)
        ]
        took = [0, 0]

        async def call(index: int) -> bool:
            granted = (await limiters[index].try_acquire(Priority.INTERACTIVE)).granted
            took[index] += granted
            await asyncio.sleep(0.005)
            return granted

        for _ in range(4):
            assert await call(0)
        while await call(1):
            pass
        assert sum(took) < 10, "the first process holds calls it has not made"
        clock.now += 1.5
        for index in (0, 1):
            while await call(index):
                pass
        return took

    took = await _with_redis(redis_url, body)
    assert sum(took) == 10
    assert took[1] > 0


@pytest.mark.redis
async def test_an_open_breaker_is_seen_by_another_process_within_its_view(
    redis_url: str,
) -> None:
    """Process two goes by a view at most `breaker_view_s` old: right after process one opens
    the shared breaker, two's fresh view still lets a call go (it made no round trip); once
    the view's age has passed, two is refused."""
    view_s = 0.2
    config = PolicyConfig(
        windows=[Window(1000, 1)],
        breaker=BreakerConfig(minimum_calls=1, open_s=30),
        breaker_view_s=view_s,
    )

    async def failing(_timeout: float) -> None:
        raise Unavailable("p", "down")

    async def body(redis: Redis, prefix: str) -> None:
        one, two = (
            Policy("p", config, RedisStore(redis, prefix), IntegrationStats()) for _ in range(2)
        )
        assert await two.breaker.state() is CircuitState.CLOSED
        set_testing(True, attempts=1)
        with pytest.raises(Unavailable):
            await one.call("/x", failing, deadline=Deadline(1))
        assert await one.breaker.state() is CircuitState.OPEN
        permit = await two.breaker.acquire()
        assert permit.permitted, "two's view, read just before, is not yet due"
        await two.breaker.release(permit)
        await asyncio.sleep(view_s)
        assert (await two.breaker.acquire()).permitted is False
        with pytest.raises(CircuitOpen):
            await two.call("/x", failing, deadline=Deadline(1))

    await _with_redis(redis_url, body)


@pytest.mark.redis
async def test_the_providers_count_is_matched_with_calls_held_in_blocks(redis_url: str) -> None:
    """Another client spent 10 of the account's calls: after the provider says so, the shared
    log leaves room for what was neither sent by anyone nor held in this process's blocks."""

    async def body(redis: Redis, prefix: str) -> tuple[int, int, int]:
        clock = Clock()
        ours = RateLimiter(
            "p", RedisStore(redis, prefix), [Window(100, 3600)], clock=clock, lease=LEASE
        )
        other = RateLimiter("p", RedisStore(redis, prefix), [Window(100, 3600)], clock=clock)
        sent = 0
        for _ in range(6):
            sent += (await ours.try_acquire(Priority.INTERACTIVE)).granted
            await asyncio.sleep(0.01)
        held = sum(pool.left(clock.now) for pool in ours._pools.values())
        await ours.observe_remaining(100, 100 - sent - 10, 3600)
        return sent, held, await other.remaining()

    sent, held, room = await _with_redis(redis_url, body)
    assert held > 0, "the scenario holds calls in a block"
    assert room == 100 - sent - 10 - held
