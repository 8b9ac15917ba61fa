"""What the resilience policy adds to one provider call: the same Clay search against the same
sandbox simulator (a separate `roleferry serve` process), sent bare with httpx and through the
policy (breaker acquire and record, rate budget, bulkhead, retry loop, error mapping at the
boundary, call statistics), with the policy's state in memory and in Redis. The three kinds of
call alternate in one run, in rotating order, so drift and noise fall on all of them alike.

    .venv/bin/python bench/policy_overhead.py [--calls 2000] [--budget 1000]
        [--redis redis://127.0.0.1:6379/0]

Three more rows, timed in the same loop, separate the policy from the machine: one Redis GET
(one round trip), and the policy alone around an attempt that returns at once, in memory and
in Redis. The Redis variant makes no round trip on a call as a rule: its breaker goes by a
view re-read in the background, its budget by blocks taken from the shared log; the figures
end with how many store operations it made per call, and the share of "policy alone, Redis"
calls that waited for one (that attempt never yields, so only a store operation it awaits can
run during it).

The policy runs on the real clock with Clay's budget scaled to the loop: `--budget` calls per
second (default 1000), of which the loop (about 250 calls a second per policy here) uses about
a third, as a provider called under its limit. Targets: at p50 at most 10% added; at p99 at
most 1 ms added.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.asyncio import Redis

from _serve import roleferry_server
from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers.clay.spec import SPEC as CLAY
from roleferry.providers.http import ProviderHTTP
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy, PolicyConfig
from roleferry.resilience.ratelimit import Window
from roleferry.resilience.store import MemoryStore, RedisStore, State, StateStore, Update

PATH = "/search/filters-mode"
BODY = {"source_type": "people", "filters": {"company_domains": ["domaur.com"]}, "limit": 1}


class CountingStore(RedisStore):
    """Counts the store operations the policy makes: a read is one round trip, an update
    two (WATCH+GET, then MULTI/SET/EXEC) or more on a conflict."""

    reads = updates = 0

    async def get(self, key: str) -> State | None:
        self.reads += 1
        return await super().get(key)

    async def update(self, key: str, fn: Update[Any], ttl_s: float) -> Any:
        self.updates += 1
        return await super().update(key, fn, ttl_s)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def policy(store: StateStore, budget: int) -> Policy:
    return Policy("clay", PolicyConfig(windows=[Window(budget, 1)]), store, IntegrationStats())


async def run(url: str, calls: int, budget: int, redis_url: str) -> dict[str, list[float]]:
    base = f"{url}/sandbox/clay"
    bare = httpx.AsyncClient(
        base_url=base,
        headers=CLAY.auth.headers(CLAY.sandbox_key),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        follow_redirects=False,
    )
    http = ProviderHTTP(CLAY, base, CLAY.sandbox_key)
    redis = Redis.from_url(redis_url)
    redis_store = CountingStore(redis, f"rf-bench-{os.getpid()}:")
    in_memory, in_redis = policy(MemoryStore(), budget), policy(redis_store, budget)

    async def send_bare() -> Any:
        response = await bare.post(PATH, json=BODY, timeout=2.0)
        response.raise_for_status()
        return response.json()

    async def attempt(timeout: float) -> Any:
        response = await http.request("POST", PATH, json=BODY, timeout=timeout)
        return http.json_object(response, PATH)

    async def nothing(_timeout: float) -> None:
        return None

    def through(p: Policy, call: Callable[[float], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def send() -> Any:
            return await p.call(PATH, call, deadline=Deadline(5))

        return send

    async def redis_get() -> Any:
        return await redis.get(redis_store.prefix + "probe")

    kinds: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare httpx": send_bare,
        "policy, memory": through(in_memory, attempt),
        "policy, Redis": through(in_redis, attempt),
        "one Redis GET": redis_get,
        "policy alone, memory": through(in_memory, nothing),
        "policy alone, Redis": through(in_redis, nothing),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    order = list(kinds)
    waited = 0
    try:
        for number in range(calls + 200):
            if number == 200:
                redis_store.reads = redis_store.updates = 0
            order = order[1:] + order[:1]
            for name in order:
                ops = redis_store.reads + redis_store.updates
                started = time.perf_counter()
                await kinds[name]()
                if number >= 200:
                    times[name].append(time.perf_counter() - started)
                    if name == "policy alone, Redis":
                        waited += redis_store.reads + redis_store.updates != ops
        through_redis = 2 * calls
        times["store reads per Redis call"] = [redis_store.reads / through_redis]
        times["store updates per Redis call"] = [redis_store.updates / through_redis]
        times["alone calls that waited for the store"] = [waited / calls]
    finally:
        await bare.aclose()
        await http.aclose()
        await redis_store.clear()
        await redis.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=1000, help="the policy's calls per second")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with roleferry_server({}) as (url, _key, _data):
        unlimited = {"rate_limit": {"limit": 10**9, "period_s": 1}}
        httpx.put(f"{url}/sandbox/_control/clay", json=unlimited).raise_for_status()
        times = asyncio.run(run(url, args.calls, args.budget, args.redis))
    reads = times.pop("store reads per Redis call")[0]
    updates = times.pop("store updates per Redis call")[0]
    waited = times.pop("alone calls that waited for the store")[0]
    bare = times["bare httpx"]
    print(f"{args.calls} calls each (after 200 warm-up), one process, sequential")
    print(f"{'':20} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>11} {'added p99 ms':>13}")
    for name, values in times.items():
        if name not in ("policy, memory", "policy, Redis", "bare httpx"):
            print(f"{name:20} {pct(values, 0.5) * 1000:8.3f} {pct(values, 0.99) * 1000:8.3f}")
            continue
        p50, p99 = pct(values, 0.5) * 1000, pct(values, 0.99) * 1000
        added50 = (pct(values, 0.5) / pct(bare, 0.5) - 1) * 100
        added99 = p99 - pct(bare, 0.99) * 1000
        print(f"{name:20} {p50:8.3f} {p99:8.3f} {added50:10.1f}% {added99:13.3f}")
    print(f"policy in Redis, per call: {reads:.4f} store reads, {updates:.4f} store updates")
    print(f"policy alone in Redis: {waited:.2%} of calls waited for a store operation")


if __name__ == "__main__":
    main()
