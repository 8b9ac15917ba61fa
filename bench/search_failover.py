"""Contact search while the sandbox's Apollo is healthy, down, hanging, slow and in a 429 storm.

For each scenario, a fresh `roleferry serve` (so breakers start closed) answers searches over
its HTTP API; in the same run, the design document's own recipe (tenacity: 3 attempts,
wait_exponential(min=2, max=10), 10 s timeout, retry on timeouts only, then fallback to Clay
and Hunter) runs against the same simulators. Printed per scenario: p50/p99 latency, success
rate (a search that returned people), calls that reached Apollo, p99 once the breaker was
open, and the baseline's p99 over ours.

    .venv/bin/python bench/search_failover.py [--requests 40] [--baseline-requests 8] [--rate 4]

Searches start at `--rate` per second (users arriving), within the sandbox's default Clay
(10/s) and Hunter (15/s) limits, so fallback capacity is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from _serve import roleferry_server

KEYS = {"apollo": "sandbox-apollo-key", "clay": "sandbox-clay-key", "hunter": "sandbox-hunter-key"}
GENEROUS = {"limit": 100_000, "period_s": 3600}
SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy": {},
    "down (500s)": {"error_rate": 1.0, "error_status": 500},
    "hanging": {"hang": True},
    "slow (2 s)": {"latency_ms": 2000},
    "429 storm": {"rate_limit": {"limit": 1, "period_s": 3600}},
}


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    after_open: list[float] = field(default_factory=list)
    apollo_calls: int = 0

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.pct(self.latencies, 0.5),
            "p99": self.pct(self.latencies, 0.99),
            "max": max(self.latencies) if self.latencies else float("nan"),
            "success": self.ok / len(self.latencies) if self.latencies else 0.0,
            "p99_open": self.pct(self.after_open, 0.99),
        }


def apollo_calls(url: str) -> int:
    stats = httpx.get(f"{url}/sandbox/_control/stats").json()["providers"]["apollo"]
    return sum(sum(v.values()) for v in stats.values())


async def paced(rate: float, domains: list[str], one: Any) -> None:
    """Starts one search every 1/rate seconds, as users arrive, and waits for all."""
    tasks = []
    for domain in domains:
        tasks.append(asyncio.create_task(one(domain)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def ours(url: str, key: str, domains: list[str], rate: float) -> Run:
    run = Run()
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(domain: str) -> None:
            started = time.perf_counter()
            response = await client.post(
                f"{url}/api/v1/contacts/search",
                json={"domain": domain, "titles": ["a", "e"], "limit": 5},
                headers={"Authorization": f"Bearer {key}"},
            )
            elapsed = time.perf_counter() - started
            run.latencies.append(elapsed)
            body = response.json()
            error = body.get("error", {}).get("details") or {}
            attempts = body.get("attempts") or error.get("attempts", [])
            if response.status_code == 200 and body["contacts"]:
                run.ok += 1
            if attempts and attempts[0]["outcome"].startswith("skipped_"):
                run.after_open.append(elapsed)

        await paced(rate, domains, one)
    return run


class DesignRecipe:
    """The design document's §3.1 retry and §3.3 waterfall, as written, on httpx."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.base = f"{url}/sandbox"
        self.client = client

    async def call_apollo(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=1, min=2, max=10),
            retry=retry_if_exception_type(httpx.TimeoutException),
            reraise=True,
        ):
            with attempt:
                response = await self.client.post(
                    f"{self.base}/apollo{path}",
                    json=body,
                    headers={"x-api-key": KEYS["apollo"]},
                    timeout=10,
                )
                response.raise_for_status()
                result: dict[str, Any] = response.json()
        return result

    async def apollo(self, domain: str) -> list[Any]:
        found = await self.call_apollo(
            "/api/v1/mixed_people/api_search",
            {"q_organization_domains_list": [domain], "person_titles": ["a", "e"], "per_page": 5},
        )
        ids = [{"id": p["id"]} for p in found["people"][:5]]
        if not ids:
            return []
        matched = await self.call_apollo("/api/v1/people/bulk_match", {"details": ids})
        return [m for m in matched["matches"] if m]

    async def clay(self, domain: str) -> list[Any]:
        response = await self.client.post(
            f"{self.base}/clay/search/filters-mode",
            timeout=10,
            json={
                "source_type": "people",
                "filters": {"company_domains": [domain], "job_titles": ["a", "e"]},
                "limit": 5,
            },
            headers={"clay-api-key": KEYS["clay"]},
        )
        response.raise_for_status()
        return list(response.json()["data"])

    async def hunter(self, domain: str) -> list[Any]:
        response = await self.client.get(
            f"{self.base}/hunter/v2/domain-search",
            params={"domain": domain, "limit": 100},
            headers={"X-API-KEY": KEYS["hunter"]},
            timeout=10,
        )
        response.raise_for_status()
        return list(response.json()["data"]["emails"])

    async def search(self, domain: str) -> bool:
        for provider in (self.apollo, self.clay, self.hunter):
            try:
                result = await provider(domain)
                if result:
                    return True
            except (httpx.HTTPError, ValueError, KeyError):
                continue
        return False


async def baseline(url: str, domains: list[str], rate: float) -> Run:
    run = Run()
    async with httpx.AsyncClient() as client:
        recipe = DesignRecipe(url, client)

        async def one(domain: str) -> None:
            started = time.perf_counter()
            ok = await recipe.search(domain)
            run.latencies.append(time.perf_counter() - started)
            run.ok += ok

        await paced(rate, domains, one)
    return run


def scenario(name: str, faults: dict[str, Any], args: argparse.Namespace) -> tuple[Run, Run]:
    settings = {"ROLEFERRY_APOLLO_RATE_LIMIT": "100000/3600", "ROLEFERRY_SEARCH_CACHE_TTL_S": "0"}
    with roleferry_server(settings) as (url, key, _):
        world = httpx.get(f"{url}/sandbox/_world/companies", params={"limit": 2000}).json()
        domains = [
            c["domain"]
            for c in world["companies"]
            if c["known_by"]["clay"] or c["known_by"]["hunter_pattern"]
        ]
        ours_domains = domains[: args.requests]
        base_domains = domains[args.requests : args.requests + args.baseline_requests]
        control = f"{url}/sandbox/_control/apollo"
        httpx.put(control, json={"rate_limit": GENEROUS, **faults}).raise_for_status()
        before = apollo_calls(url)
        mine = asyncio.run(ours(url, key, ours_domains, args.rate))
        mine.apollo_calls = apollo_calls(url) - before
        before = apollo_calls(url)
        base = asyncio.run(baseline(url, base_domains, args.rate))
        base.apollo_calls = apollo_calls(url) - before
        return mine, base


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--baseline-requests", type=int, default=8)
    parser.add_argument("--rate", type=float, default=4.0, help="searches started per second")
    args = parser.parse_args()
    header = (
        f"{'scenario':<13} {'who':<9} {'n':>3} {'p50 s':>7} {'p99 s':>7} {'max s':>7} "
        f"{'ok %':>6} {'apollo calls':>12} {'p99 open s':>10} {'base p99 / ours':>15}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, faults in SCENARIOS.items():
        mine, base = scenario(name, faults, args)
        m, b = mine.summary(), base.summary()
        worst = max(worst, m["max"])
        ratio = b["p99"] / m["p99"] if m["p99"] else float("nan")
        for who, run, s, extra in (("ours", mine, m, f"{ratio:>15.1f}"), ("baseline", base, b, "")):
            print(
                f"{name:<13} {who:<9} {len(run.latencies):>3} {s['p50']:>7.3f} {s['p99']:>7.3f} "
                f"{s['max']:>7.3f} {s['success'] * 100:>6.1f} {run.apollo_calls:>12} "
                f"{s['p99_open']:>10.3f} {extra}"
            )

    print(f"\nslowest request of ours in any scenario: {worst:.3f} s (target <= 5 s)")


if __name__ == "__main__":
    main()
