"""The breaker opens, refuses without calling, half-opens after its time, and closes or opens
again on what its probes see: driven by real faults in the sandbox, not mocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roleferry.providers import errors
from roleferry.providers.registry import Providers
from roleferry.resilience.breaker import BreakerConfig, CircuitBreaker, CircuitState
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.ratelimit import Priority
from roleferry.resilience.store import MemoryStore
from tests.support.providers import providers_for
from tests.support.sandbox_server import SandboxServer

OPEN_S = 0.6


@pytest.fixture
async def providers(sb: SandboxServer, tmp_path: Path) -> AsyncIterator[Providers]:
    built = providers_for(
        sb, tmp_path, breaker_open_s=OPEN_S, attempt_timeout_s=0.5, apollo_rate_limit="1000/60"
    )
    yield built
    await built.aclose()


async def call(providers: Providers) -> None:
    await providers.people_finders["apollo"].search_people(
        "domaur.com", ["vp"], 3, deadline=Deadline(3), priority=Priority.INTERACTIVE
    )


def apollo_calls(sb: SandboxServer) -> int:
    return sum(sum(s.values()) for s in sb.stats()["providers"]["apollo"].values())


async def test_opens_refuses_half_opens_and_closes(providers: Providers, sb: SandboxServer) -> None:
    breaker = providers.policies["apollo"].breaker
    sb.control("apollo", error_rate=1.0, error_status=500)
    with pytest.raises(errors.Unavailable):
        await call(providers)
    with pytest.raises(errors.CircuitOpen):
        await call(providers)
    assert await breaker.state() is CircuitState.OPEN
    sent = apollo_calls(sb)
    assert sent == 5, "3 + 2 attempts: the fifth failure reached minimum_calls and opened it"

    with pytest.raises(errors.CircuitOpen):
        await call(providers)
    assert apollo_calls(sb) == sent, "no request reaches a provider while its breaker is open"

    sb.control("apollo", error_rate=0.0)
    await asyncio.sleep(OPEN_S + 0.05)
    assert await breaker.state() is CircuitState.HALF_OPEN
    await call(providers)
    assert await breaker.state() is CircuitState.CLOSED
    assert apollo_calls(sb) == sent + 2


async def test_failed_probes_open_it_again(providers: Providers, sb: SandboxServer) -> None:
    breaker = providers.policies["apollo"].breaker
    sb.control("apollo", error_rate=1.0, error_status=503)
    for _ in range(2):
        with pytest.raises(errors.ProviderError):
            await call(providers)
    await asyncio.sleep(OPEN_S + 0.05)
    sent = apollo_calls(sb)
    with pytest.raises(errors.ProviderError):
        await call(providers)
    assert await breaker.state() is CircuitState.OPEN
    assert apollo_calls(sb) - sent == 2, "exactly the permitted half-open probes went"


async def test_slow_calls_open_it(providers: Providers, sb: SandboxServer) -> None:
    policy = providers.policies["apollo"]
    policy.breaker.config = BreakerConfig(slow_call_s=0.15, minimum_calls=4, open_s=OPEN_S)
    sb.control("apollo", latency_ms=200)
    await call(providers)
    await call(providers)
    assert await policy.breaker.state() is CircuitState.OPEN


async def test_rate_limits_and_auth_failures_do_not_open_it() -> None:
    breaker = CircuitBreaker("x", MemoryStore(), BreakerConfig(minimum_calls=2))
    for _ in range(5):
        permit = await breaker.acquire()
        await breaker.record(permit, failed=False, duration_s=0.01)
    assert await breaker.state() is CircuitState.CLOSED


async def test_concurrent_half_open_callers_beyond_the_probes_are_refused() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(
        "x",
        MemoryStore(),
        BreakerConfig(minimum_calls=1, open_s=1, half_open_calls=2),
        clock=lambda: clock[0],
    )
    permit = await breaker.acquire()
    await breaker.record(permit, failed=True, duration_s=0.01)
    assert (await breaker.acquire()).permitted is False
    clock[0] = 1.5
    permits = [await breaker.acquire() for _ in range(4)]
    assert [p.permitted for p in permits] == [True, True, False, False]


@pytest.mark.redis
async def test_breaker_state_is_shared_through_redis(redis_url: str) -> None:
    """Two processes' breakers on one Redis: what opens one is open for the other."""
    import os

    from redis.asyncio import Redis

    from roleferry.resilience.store import RedisStore

    redis = Redis.from_url(redis_url)
    prefix = f"rf-breaker-test-{os.getpid()}:"
    config = BreakerConfig(minimum_calls=2, open_s=30)
    first = CircuitBreaker("apollo", RedisStore(redis, prefix), config)
    second = CircuitBreaker("apollo", RedisStore(redis, prefix), config)
    try:
        for breaker in (first, second):
            permit = await breaker.acquire()
            await breaker.record(permit, failed=True, duration_s=0.01)
        assert await first.state() is CircuitState.OPEN
        assert (await second.acquire()).permitted is False
    finally:
        await RedisStore(redis, prefix).clear()
        await redis.aclose()
