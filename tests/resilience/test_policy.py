"""Retries, Retry-After, deadlines and the bulkhead, as one policy applies them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers import errors
from roleferry.providers.registry import Providers
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy, PolicyConfig, RetryConfig
from roleferry.resilience.ratelimit import Priority, Window
from roleferry.resilience.store import MemoryStore
from tests.support.providers import providers_for
from tests.support.sandbox_server import SandboxServer


@pytest.fixture
async def providers(sb: SandboxServer, tmp_path: Path) -> AsyncIterator[Providers]:
    built = providers_for(sb, tmp_path, attempt_timeout_s=0.5, apollo_rate_limit="1000/60")
    yield built
    await built.aclose()


async def search(providers: Providers, seconds: float = 3) -> None:
    await providers.people_finders["apollo"].search_people(
        "domaur.com", ["vp"], 3, deadline=Deadline(seconds), priority=Priority.INTERACTIVE
    )


async def test_transient_errors_are_retried(providers: Providers, sb: SandboxServer) -> None:
    sb.control("apollo", fail_next=2, error_status=502)
    await search(providers)
    stats = sb.stats()["providers"]["apollo"]
    assert stats["/api/v1/mixed_people/api_search"] == {"200": 1, "502": 2}
    assert stats["/api/v1/people/bulk_match"] == {"200": 1}


async def test_a_429_retry_after_is_honoured(providers: Providers, sb: SandboxServer) -> None:
    """Our budget says yes, the provider says 429 retry-after 1 s: we wait that, then succeed."""
    sb.control("apollo", rate_limit={"limit": 2, "period_s": 1})
    started = time.monotonic()
    await search(providers)
    await search(providers)
    elapsed = time.monotonic() - started
    stats = sb.stats()["providers"]["apollo"]
    assert sum(s.get("429", 0) for s in stats.values()) >= 1
    assert elapsed >= 0.5, "the retry waited for the window the provider named"


async def test_no_retry_that_cannot_finish_before_the_deadline(
    providers: Providers, sb: SandboxServer
) -> None:
    sb.control("apollo", rate_limit={"limit": 1, "period_s": 1800})
    with pytest.raises(errors.RateLimited):
        await search(providers)
    started = time.monotonic()
    await providers.store.clear()
    with pytest.raises(errors.RateLimited):
        await search(providers, seconds=2)
    # Well under the 2 s deadline, with room for a busy machine: it did not wait at all.
    assert time.monotonic() - started < 1.0, "a long Retry-After does not fit a 2 s deadline"


async def test_a_hanging_provider_costs_no_more_than_the_deadline(
    providers: Providers, sb: SandboxServer
) -> None:
    sb.control("apollo", hang=True)
    started = time.monotonic()
    with pytest.raises(errors.Timeout):
        await search(providers, seconds=1.2)
    # The 1.2 s deadline plus slack for a busy machine, still short of the 2 s attempt timeout
    # that a call ignoring the deadline would wait.
    assert time.monotonic() - started < 1.9


async def test_non_retryable_errors_are_not_retried(sb: SandboxServer, tmp_path: Path) -> None:
    built = providers_for(
        sb, tmp_path, apollo_api_key="nope-nope-nope", apollo_base_url=sb.base("apollo")
    )
    try:
        with pytest.raises(errors.AuthFailed):
            await search(built)
    finally:
        await built.aclose()
    assert sb.stats()["providers"]["apollo"]["/api/v1/mixed_people/api_search"] == {"401": 1}


async def test_bulkhead_bounds_concurrent_calls() -> None:
    policy = Policy(
        "x",
        PolicyConfig(windows=[Window(1000, 1)], max_concurrency=2, retry=RetryConfig(attempts=1)),
        MemoryStore(),
        IntegrationStats(),
    )
    in_flight = peak = 0

    async def attempt(_timeout: float) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1

    await asyncio.gather(*(policy.call("/x", attempt, deadline=Deadline(5)) for _ in range(8)))
    assert peak == 2
