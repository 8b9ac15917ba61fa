"""Contact search while the sandbox's Apollo is healthy, down, hanging, slow and in a 429 storm.

For each scenario, in the same run and with the same number of searches each:
- ours with hedging on, and ours with hedging off (ROLEFERRY_NO_HEDGE=apollo,clay,hunter),
  each on a fresh `roleferry serve` (so breakers start closed), over its HTTP API;
- the design document's own recipe (tenacity: 3 attempts, wait_exponential(min=2, max=10),
  10 s timeout, retry on timeouts only, then fallback to Clay and Hunter), as written;
- the same recipe held to our 5 s deadline (Apollo gets the deadline less 0.75 s for each
  provider after it, as ours does), so the gain from the breaker and hedging shows apart from
  the gain from the deadline.
Printed per row: p50, p99 (only where n >= 100, else the max: a p99 of fewer samples is the
max anyway), max, success rate (people returned), calls that reached each provider, and for
hedging, the extra provider calls it cost against hedging off.

    .venv/bin/python bench/search_failover.py [--requests 40] [--rate 4] [--only hanging,slow]

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
    "down": {"error_rate": 1.0, "error_status": 500},
    "hanging": {"hang": True},
    "slow": {"latency_ms": 2000},
    "429storm": {"rate_limit": {"limit": 1, "period_s": 3600}},
}
DEADLINE_S = 5.0
RESERVE_S = 0.75
NO_HEDGE = "apollo,clay,hunter"
SLOW_S = 1.2


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    after_open: list[float] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def tail(self, values: list[float]) -> str:
        """p99 where there are 100 samples or more, else the max, labelled."""
        if not values:
            return "-"
        if len(values) >= 100:
            return f"p99 {self.pct(values, 0.99):.3f} max {max(values):.3f}"
        return f"max {max(values):.3f}"


def provider_calls(url: str) -> dict[str, int]:
    stats = httpx.get(f"{url}/sandbox/_control/stats").json()["providers"]
    return {
        p: sum(sum(v.values()) for v in stats[p].values()) for p in ("apollo", "clay", "hunter")
    }


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
            if elapsed > SLOW_S or not (response.status_code == 200 and body["contacts"]):
                run.misses.append(
                    f"{domain}: {response.status_code} in {elapsed:.2f} s: "
                    + ", ".join(f"{a['provider']} {a['outcome']}" for a in attempts)
                )
            if attempts and attempts[0]["outcome"].startswith("skipped_"):
                run.after_open.append(elapsed)

        await paced(rate, domains, one)
    return run


class DesignRecipe:
    """The design document's §3.1 retry and §3.3 waterfall, as written, on httpx."""

    def __init__(
        self, url: str, client: httpx.AsyncClient, deadline_s: float | None = None
    ) -> None:
        self.base = f"{url}/sandbox"
        self.client = client
        self.deadline_s = deadline_s

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
        """As written; or, with a deadline, each provider held to the time left less a
        reserve for those after it."""
        started = time.monotonic()
        providers = (self.apollo, self.clay, self.hunter)
        for index, provider in enumerate(providers):
            budget = None
            if self.deadline_s is not None:
                left = self.deadline_s - (time.monotonic() - started)
                budget = left - RESERVE_S * (len(providers) - index - 1)
                if budget <= 0:
                    continue
            try:
                async with asyncio.timeout(budget):
                    result = await provider(domain)
                if result:
                    return True
            except (httpx.HTTPError, ValueError, KeyError, TimeoutError):
                continue
        return False


async def baseline(url: str, domains: list[str], rate: float, deadline_s: float | None) -> Run:
    run = Run()
    async with httpx.AsyncClient() as client:
        recipe = DesignRecipe(url, client, deadline_s)

        async def one(domain: str) -> None:
            started = time.perf_counter()
            ok = await recipe.search(domain)
            run.latencies.append(time.perf_counter() - started)
            run.ok += ok

        await paced(rate, domains, one)
    return run


def measure(
    faults: dict[str, Any], args: argparse.Namespace, settings: dict[str, str], who: str
) -> Run:
    """One configuration on a fresh server: ours (hedging on or off) or a baseline."""
    with roleferry_server(settings) as (url, key, _):
        world = httpx.get(f"{url}/sandbox/_world/companies", params={"limit": 2000}).json()
        domains = [
            c["domain"]
            for c in world["companies"]
            if c["known_by"]["clay"] or c["known_by"]["hunter_pattern"]
        ][: args.requests]
        control = f"{url}/sandbox/_control/apollo"
        httpx.put(control, json={"rate_limit": GENEROUS, **faults}).raise_for_status()
        before = provider_calls(url)
        if who.startswith("ours"):
            run = asyncio.run(ours(url, key, domains, args.rate))
        else:
            deadline = DEADLINE_S if who == "recipe+5s" else None
            run = asyncio.run(baseline(url, domains, args.rate, deadline))
        after = provider_calls(url)
        run.calls = {p: after[p] - before[p] for p in after}
        return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40, help="searches per configuration")
    parser.add_argument("--rate", type=float, default=4.0, help="searches started per second")
    parser.add_argument("--only", default="", help="comma-separated scenarios to run")
    args = parser.parse_args()
    base = {
        "ROLEFERRY_APOLLO_RATE_LIMIT": "100000/3600",
        "ROLEFERRY_SEARCH_CACHE_TTL_S": "0",
        "ROLEFERRY_USER_RATE_LIMIT": "1000/1",
        # One user sends every search here: its fair share would be the bottleneck measured.
        "ROLEFERRY_USER_BUDGET_SHARE": "1",
    }
    configs = {
        "ours": base,
        "ours-nohedge": {**base, "ROLEFERRY_NO_HEDGE": NO_HEDGE},
        "recipe": base,
        "recipe+5s": base,
    }
    header = (
        f"{'scenario':<9} {'who':<13} {'n':>4} {'p50 s':>7} {'tail s':>21} {'ok %':>6} "
        f"{'apollo':>6} {'clay':>5} {'hunter':>6} {'extra calls':>11}"
    )
    print(header)
    print("-" * len(header))
    wanted = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    for name in wanted:
        runs = {
            who: measure(SCENARIOS[name], args, settings, who) for who, settings in configs.items()
        }
        plain = sum(runs["ours-nohedge"].calls.values())
        for who, run in runs.items():
            extra = f"{sum(run.calls.values()) - plain:+d}" if who == "ours" else ""
            print(
                f"{name:<9} {who:<13} {len(run.latencies):>4} "
                f"{run.pct(run.latencies, 0.5):>7.3f} {run.tail(run.latencies):>21} "
                f"{run.ok / max(1, len(run.latencies)) * 100:>6.1f} {run.calls['apollo']:>6} "
                f"{run.calls['clay']:>5} {run.calls['hunter']:>6} {extra:>11}"
            )
        for who in ("ours", "ours-nohedge"):
            for miss in runs[who].misses[:3]:
                print(f"    {who} without people or over {SLOW_S} s: {miss}")


if __name__ == "__main__":
    main()
