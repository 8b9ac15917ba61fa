"""AI drafting: what our endpoint adds to the first token, and drafts under a 529 storm.

On one `roleferry serve` with its sandbox mounted, in the same run:
1. `--drafts` pairs, interleaved: the official SDK (`AsyncAnthropic.messages.stream`, retries
   off) straight to the simulator with the exact request our endpoint sends, then the same
   draft through `POST /api/v1/drafts` (SSE). Time to first token = from sending to the first
   text (`content_block_delta` for the SDK, the first `delta` event for ours). Printed: p50,
   p95, p99 of each and of the per-pair overhead (ours - SDK). Target: p50 overhead ≤ 10 ms.
2. `--drafts` drafts while the first model of the chain answers every request with 529, then
   again while it sends no first token for 30 s: the share that got a draft (a `done` event)
   and their time to first token. Target: 100%, p99 ≤ first-token deadline + 0.5 s.

Drafts are charged as in production (billing on, ai_draft credits; the user is granted
enough). `--api-key-cache-s 0` measures with every request's API key looked up in the database.

    .venv/bin/python bench/draft_stream.py [--drafts 200] [--concurrency 1]
        [--storm-concurrency 4] [--only overhead,529,hung] [--api-key-cache-s 5] [--billing on]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import anthropic
import httpx

from _serve import roleferry_server
from roleferry.drafting import prompt
from roleferry.drafting.prompt import DraftRequest

FIRST, SECOND = "claude-sonnet-4-6", "claude-haiku-4-5"
DEADLINE_S = 3.0
SANDBOX_KEY = "sk-ant-sandbox-key"
ASK: dict[str, Any] = {
    "recipient": {"name": "Jane Doe", "title": "VP Product", "company": "acme.com"},
    "aim": {"role": "Product Manager", "about": "I shipped a billing product"},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sdk_first_token(sdk: anthropic.AsyncAnthropic) -> float:
    """The SDK straight to the simulator, the request our endpoint sends for ASK."""
    request = DraftRequest.model_validate(ASK)
    started = time.perf_counter()
    first = 0.0
    async with sdk.messages.stream(
        model=FIRST,
        max_tokens=prompt.max_tokens(request),
        system=prompt.system_prompt(request),
        messages=[{"role": "user", "content": prompt.user_prompt(request)}],
    ) as stream:
        async for event in stream:
            if not first and event.type == "content_block_delta":
                first = time.perf_counter() - started
    return first


async def our_first_token(http: httpx.AsyncClient, key: str) -> tuple[float, str | None]:
    """Our endpoint over SSE: time to the first delta, and the `done` event's source."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    started = time.perf_counter()
    first, source, event = 0.0, None, ""
    async with http.stream("POST", "/api/v1/drafts", json=ASK, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "delta" and not first:
                    first = time.perf_counter() - started
            elif line.startswith("data: ") and event == "done":
                source = json.loads(line[6:])["source"]
    return first, source


async def overhead(url: str, key: str, drafts: int, concurrency: int) -> None:
    sdk = anthropic.AsyncAnthropic(
        api_key=SANDBOX_KEY, base_url=f"{url}/sandbox/anthropic", max_retries=0
    )
    pairs: list[tuple[float, float]] = []
    queue = list(range(drafts))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await sdk_first_token(sdk)
        await our_first_token(http, key)  # warm: imports, connections, the chain

        async def worker() -> None:
            while queue:
                index = queue.pop()
                if index % 2:
                    ours, _ = await our_first_token(http, key)
                    theirs = await sdk_first_token(sdk)
                else:
                    theirs = await sdk_first_token(sdk)
                    ours, _ = await our_first_token(http, key)
                pairs.append((theirs, ours))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    await sdk.close()
    sdk_ms = [p[0] * 1000 for p in pairs]
    ours_ms = [p[1] * 1000 for p in pairs]
    added = [o - s for s, o in zip(sdk_ms, ours_ms, strict=True)]
    print(f"\nfirst token, {len(pairs)} pairs, concurrency {concurrency} (ms)")
    print(f"{'':24}{'p50':>9}{'p95':>9}{'p99':>9}")
    for name, values in (("SDK -> simulator", sdk_ms), ("ours (SSE)", ours_ms)):
        row = "".join(f"{percentile(values, q):9.1f}" for q in (0.5, 0.95, 0.99))
        print(f"{name:24}{row}")
    row = "".join(f"{percentile(added, q):9.1f}" for q in (0.5, 0.95, 0.99))
    print(f"{'overhead (per pair)':24}{row}")
    p50_gap = statistics.median(ours_ms) - statistics.median(sdk_ms)
    print(f"p50 overhead {percentile(added, 0.5):.1f} ms (target <= 10 ms); p50 gap {p50_gap:.1f}")


STORMS: dict[str, dict[str, Any]] = {
    "529": {"kind": "status", "status": 529, "model": FIRST, "times": None},
    "hung": {"kind": "slow_first_token", "seconds": 30, "model": FIRST, "times": None},
}


async def storm(url: str, key: str, name: str, drafts: int, concurrency: int) -> None:
    """Every request to the first model fails (`529`) or sends no token for 30 s (`hung`)."""
    results: list[tuple[float, str | None]] = []
    queue = list(range(drafts))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await http.post("/sandbox/_control/reset")
        await our_first_token(http, key)  # warm: a process's first draft imports the SDK
        faults = {
            "stream_faults": [STORMS[name]],
            "rate_limit": {"limit": 1_000_000, "period_s": 60},
        }
        control = await http.put("/sandbox/_control/anthropic", json=faults)
        control.raise_for_status()

        async def worker() -> None:
            while queue:
                queue.pop()
                results.append(await our_first_token(http, key))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        stats = (await http.get("/sandbox/_control/stats")).json()["providers"]["anthropic"]
    got = [r for r in results if r[1] is not None]
    ttft = [r[0] for r in got]
    sources = {s: sum(1 for r in got if r[1] == s) for s in {r[1] for r in got}}
    print(f"\n{name} storm on {FIRST}: {len(got)}/{len(results)} got a draft {sources}")
    print(
        f"time to first token: p50 {percentile(ttft, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(ttft, 0.99) * 1000:.0f} ms, max {max(ttft) * 1000:.0f} ms "
        f"(target p99 <= {(DEADLINE_S + 0.5) * 1000:.0f} ms)"
    )
    print(f"simulator saw: {stats.get('/v1/messages')}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drafts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1, help="for the overhead pairs")
    parser.add_argument("--storm-concurrency", type=int, default=4)
    parser.add_argument("--only", default="overhead,529,hung", help="parts to run")
    parser.add_argument("--api-key-cache-s", type=float, default=5.0)
    parser.add_argument("--billing", choices=("on", "off"), default="on")
    args = parser.parse_args()
    settings = {
        "ROLEFERRY_ANTHROPIC_MODELS": f"{FIRST},{SECOND}",
        "ROLEFERRY_ANTHROPIC_RATE_LIMIT": "1000000/60",
        "ROLEFERRY_SANDBOX_FAULTS": "anthropic:rate_limit=1000000/60",
        "ROLEFERRY_USER_RATE_LIMIT": "100000/1",
        "ROLEFERRY_DRAFT_DAILY_TOKENS": "0",
        "ROLEFERRY_DRAFT_FIRST_TOKEN_S": str(DEADLINE_S),
        "ROLEFERRY_STARTING_CREDITS": "1000000",
        "ROLEFERRY_BILLING": args.billing,
        "ROLEFERRY_API_KEY_CACHE_S": str(args.api_key_cache_s),
    }
    with roleferry_server(settings) as (url, key, _data):
        if "overhead" in args.only:
            await overhead(url, key, args.drafts, args.concurrency)
        for name in STORMS:
            if name in args.only:
                await storm(url, key, name, args.drafts, args.storm_concurrency)


if __name__ == "__main__":
    asyncio.run(main())
