"""What the resilience policy adds to one provider call: the same Clay search against the same
sandbox simulator (a separate `roleferry serve` process), sent bare with httpx and through the
policy (breaker acquire and record, rate budget, bulkhead, retry loop, error mapping at the
boundary, call statistics), with the policy's state in memory and in Redis. The three kinds of
call alternate in one run, in rotating order, so drift and noise fall on all of them alike.

    .venv/bin/python bench/policy_overhead.py [--calls 2000] [--redis redis://127.0.0.1:6379/0]

Three more rows, timed in the same loop, separate the policy from the machine: one Redis GET
(a round trip, which the Redis variant pays four times: breaker read, budget WATCH+GET and
MULTI/EXEC, breaker read on record), and the policy alone around an attempt that returns at
once, in memory and in Redis. The policy runs on a virtual clock that moves 0.2 s per call,
so Clay's default budget (10/1) always has room and its log holds what it holds in service
(at most 10 calls), rather than the thousands a tight loop would pile into one second.
Targets: at p50 at most 10% added; at p99 at most 1 ms added.
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
from roleferry.resilience.store import MemoryStore, RedisStore, StateStore

PATH = "/search/filters-mode"
BODY = {"source_type": "people", "filters": {"company_domains": ["domaur.com"]}, "limit": 1}


class VirtualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def policy(store: StateStore, clock: VirtualClock) -> Policy:
    return Policy(
        "clay",
        PolicyConfig(windows=Window.parse(CLAY.rate_limit)),
        store,
        IntegrationStats(),
        clock=clock,
    )


async def run(url: str, calls: int, redis_url: str) -> dict[str, list[float]]:
    base = f"{url}/sandbox/clay"
    bare = httpx.AsyncClient(
        base_url=base,
        headers=CLAY.auth.headers(CLAY.sandbox_key),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        follow_redirects=False,
    )
    http = ProviderHTTP(CLAY, base, CLAY.sandbox_key)
    redis = Redis.from_url(redis_url)
    redis_store = RedisStore(redis, f"rf-bench-{os.getpid()}:")
    clock = VirtualClock()
    in_memory, in_redis = policy(MemoryStore(), clock), policy(redis_store, clock)

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
            clock.now += 0.2
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
    try:
        for number in range(calls + 200):
            order = order[1:] + order[:1]
            for name in order:
                started = time.perf_counter()
                await kinds[name]()
                if number >= 200:
                    times[name].append(time.perf_counter() - started)
    finally:
        await bare.aclose()
        await http.aclose()
        await redis_store.clear()
        await redis.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with roleferry_server({}) as (url, _key, _data):
        unlimited = {"rate_limit": {"limit": 10**9, "period_s": 1}}
        httpx.put(f"{url}/sandbox/_control/clay", json=unlimited).raise_for_status()
        times = asyncio.run(run(url, args.calls, args.redis))
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


if __name__ == "__main__":
    main()
