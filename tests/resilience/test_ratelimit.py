"""One budget per provider account: shares between interactive and bulk work, tightening on
what the provider says, and never exceeded by several processes sharing Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from roleferry.resilience.ratelimit import Priority, RateLimiter, Window
from roleferry.resilience.store import MemoryStore, RedisStore
from tests.support.sandbox_server import SandboxServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_sliding_window_refuses_and_says_when() -> None:
    clock = Clock()
    limiter = RateLimiter("x", MemoryStore(), [Window(3, 10)], clock=clock)
    grants = [await limiter.try_acquire(Priority.INTERACTIVE) for _ in range(4)]
    assert [g.granted for g in grants] == [True, True, True, False]
    assert grants[-1].wait_s == pytest.approx(10.25), "the period and the trip's grace"
    clock.now += 10.1
    assert not (await limiter.try_acquire(Priority.INTERACTIVE)).granted
    clock.now += 0.2
    assert (await limiter.try_acquire(Priority.INTERACTIVE)).granted


async def test_bulk_takes_at_most_its_share_and_interactive_the_rest() -> None:
    limiter = RateLimiter("x", MemoryStore(), [Window(10, 60)], bulk_share=0.8, clock=Clock())
    bulk = [await limiter.try_acquire(Priority.BULK) for _ in range(10)]
    assert sum(g.granted for g in bulk) == 8
    assert await limiter.remaining(Priority.BULK) == 0
    interactive = [await limiter.try_acquire(Priority.INTERACTIVE) for _ in range(3)]
    assert [g.granted for g in interactive] == [True, True, False]


async def test_every_window_must_have_room() -> None:
    clock = Clock()
    limiter = RateLimiter("x", MemoryStore(), Window.parse("2/1,3/60"), clock=clock)
    assert [(await limiter.try_acquire(Priority.INTERACTIVE)).granted for _ in range(3)] == [
        True,
        True,
        False,
    ]
    clock.now += 1.5
    assert (await limiter.try_acquire(Priority.INTERACTIVE)).granted
    assert not (await limiter.try_acquire(Priority.INTERACTIVE)).granted


async def test_a_429_and_the_providers_count_tighten_the_budget() -> None:
    clock = Clock()
    limiter = RateLimiter("x", MemoryStore(), [Window(100, 3600)], clock=clock)
    await limiter.observe_remaining(100, 10, 3600)
    assert await limiter.remaining() == 10, "another client used 90 of the account's 100"
    lower = RateLimiter("y", MemoryStore(), [Window(100, 3600)], clock=clock)
    await lower.observe_remaining(20, 15, 3600)
    assert await lower.remaining() == 15, "the provider's lower limit rules"
    assert await lower.remaining(Priority.BULK) == 11, (
        "bulk gets 80% of the provider's 20, less 5 used"
    )
    await limiter.penalize(30)
    grant = await limiter.try_acquire(Priority.INTERACTIVE)
    assert not grant.granted
    assert grant.wait_s == pytest.approx(30)


@pytest.mark.redis
async def test_redis_store_shares_one_budget(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    prefix = f"rf-test-{os.getpid()}:"
    try:
        a = RateLimiter("apollo", RedisStore(redis, prefix), [Window(5, 60)])
        b = RateLimiter("apollo", RedisStore(redis, prefix), [Window(5, 60)])
        granted = [(await x.try_acquire(Priority.INTERACTIVE)).granted for x in (a, b) * 4]
        assert sum(granted) == 5
    finally:
        await RedisStore(redis, prefix).clear()
        await redis.aclose()


HAMMER = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from roleferry.monitoring.integrations import IntegrationStats
    from roleferry.providers.registry import Providers
    from roleferry.providers import errors
    from roleferry.resilience.deadline import Deadline
    from roleferry.resilience.ratelimit import Priority
    from tests.conftest import make_settings

    async def main() -> None:
        url, redis, tmp = sys.argv[1], sys.argv[2], Path(sys.argv[3])
        settings = make_settings(tmp, redis_url=redis, apollo_rate_limit="10/2")
        providers = Providers(settings, url, IntegrationStats())
        sent = refused = 0
        # Start together: a process still importing while the other spends the budget is not
        # sharing it.
        (tmp.parent / f"ready-{tmp.name}").touch()
        while not (tmp.parent / "go").exists():
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        end = loop.time() + 3
        while loop.time() < end:
            try:
                await providers.email_finders["apollo"].find_emails(
                    [], deadline=Deadline(1), priority=Priority.INTERACTIVE)
                await providers.policies["apollo"].call(
                    "/api/v1/people/match", lambda t: providers.people_finders["apollo"]._post(
                        "/api/v1/people/match", {"id": "x"}, t), deadline=Deadline(1))
                sent += 1
            except errors.BudgetExhausted:
                refused += 1
                await asyncio.sleep(0.01)
        await providers.aclose()
        print(json.dumps({"sent": sent, "refused": refused}))

    asyncio.run(main())
""")


@pytest.mark.redis
def test_two_processes_sharing_redis_never_exceed_the_providers_limit(
    sb: SandboxServer, redis_url: str, tmp_path: Path
) -> None:
    """Two processes hammer Apollo for 3 s under one shared budget: no 429, all used."""
    from redis import Redis as SyncRedis

    SyncRedis.from_url(redis_url).delete("roleferry:ratelimit:apollo", "roleferry:breaker:apollo")
    sb.control("apollo", rate_limit={"limit": 10, "period_s": 2})
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), sb.url, redis_url, str(tmp_path / f"p{i}")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-p{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]
    statuses = sb.stats()["providers"]["apollo"]["/api/v1/people/match"]
    assert "429" not in statuses
    assert all(r["sent"] > 0 for r in results), "both processes got a share"
    sent = sum(r["sent"] for r in results)
    assert statuses["200"] == sent
    assert 10 <= sent <= 20, "3 s at 10 per 2 s: at most two full windows, and the budget was used"


async def test_one_user_exhausting_its_share_leaves_others_served() -> None:
    """A user past its share of a window is refused with the exact wait; another user, and
    calls with no owner, still go."""
    from roleferry.resilience.ratelimit import owner

    now = [1000.0]
    limiter = RateLimiter("apollo", MemoryStore(), [Window(10, 60)], 0.8, lambda: now[0], 0.3)
    with owner("alice"):
        granted = [(await limiter.try_acquire(Priority.INTERACTIVE)).granted for _ in range(4)]
        assert granted == [True, True, True, False]
        now[0] += 5
        refused = await limiter.try_acquire(Priority.INTERACTIVE)
        assert not refused.granted
        assert refused.wait_s == pytest.approx(60 + 0.25 - 5)
        assert (await limiter.room())[1] == pytest.approx(refused.wait_s)
    with owner("bob"):
        assert (await limiter.try_acquire(Priority.INTERACTIVE)).granted
        assert await limiter.remaining() == 2
    now[0] += 56
    with owner("alice"):
        assert (await limiter.try_acquire(Priority.INTERACTIVE)).granted, "room once it frees"


async def test_the_wait_is_the_earliest_time_every_window_has_room() -> None:
    """With two windows spent, the wait is the later of their refills, to the clock."""
    now = [0.0]
    limiter = RateLimiter(
        "hunter", MemoryStore(), [Window(2, 1), Window(3, 60)], 1.0, lambda: now[0]
    )
    for _ in range(2):
        assert (await limiter.try_acquire(Priority.INTERACTIVE)).granted
    now[0] = 2.0
    assert (await limiter.try_acquire(Priority.INTERACTIVE)).granted
    now[0] = 10.0
    grant = await limiter.try_acquire(Priority.INTERACTIVE)
    assert not grant.granted
    assert grant.wait_s == pytest.approx(60.25 - 10)
