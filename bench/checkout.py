"""Checkout latency: `POST /api/v1/checkout` through our API (auth, the policy, the official
SDK, the payment row written) against the same SDK call sent straight to the same Stripe
simulator, in one run on one `roleferry serve`, alternating so drift falls on both alike.

    .venv/bin/python bench/checkout.py [--calls 400]

Target: at most 15 ms added at p50. On a busy machine the wall-clock figures move with the
load, so the server's CPU time per call is measured too (a run of our API's checkouts, then
one of the SDK's straight to the simulator, from /proc): what our API costs the server beyond
the simulator's own work, which the load does not change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import stripe

from _serve import roleferry_server

PARAMS: dict[str, Any] = {
    "mode": "payment",
    "line_items": [
        {
            "quantity": 1,
            "price_data": {
                "currency": "usd",
                "unit_amount": 1000,
                "product_data": {"name": "100 RoleFerry credits"},
            },
        }
    ],
    "client_reference_id": "usr_bench",
    "metadata": {"credits": "100", "pack": "small"},
    "success_url": "http://127.0.0.1/?checkout={CHECKOUT_SESSION_ID}",
    "cancel_url": "http://127.0.0.1/",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


OURS, STRAIGHT = "our API", "sdk straight to the simulator"


class Callers:
    """Both kinds of checkout, against one server."""

    def __init__(self, url: str, key: str) -> None:
        self.sdk = stripe.StripeClient(
            "sk_test_sandbox",
            base_addresses={"api": f"{url}/sandbox/stripe"},
            max_network_retries=0,
            http_client=stripe.HTTPXClient(),
        )
        self.api = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    async def call(self, name: str, key: str) -> None:
        if name == OURS:
            response = await self.api.post(
                "/api/v1/checkout", json={"pack": "small"}, headers={"Idempotency-Key": key}
            )
            assert response.status_code == 201, response.text
        else:
            await self.sdk.v1.checkout.sessions.create_async(
                params=PARAMS, options={"idempotency_key": key}
            )


async def run(url: str, key: str, calls: int) -> dict[str, list[float]]:
    callers = Callers(url, key)
    timings: dict[str, list[float]] = {STRAIGHT: [], OURS: []}
    for i in range(calls + 20):
        for name in list(timings) if i % 2 else list(reversed(timings)):
            started = time.perf_counter()
            await callers.call(name, f"bench-{i}")
            if i >= 20:
                timings[name].append((time.perf_counter() - started) * 1000)
    await callers.api.aclose()
    return timings


def server_cpu_s(port: int) -> float:
    """CPU seconds (user + system, all threads) of the `roleferry serve` on `port`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" in command and str(port).encode() in command:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    raise RuntimeError(f"no roleferry serve on port {port}")


async def cpu_per_call(url: str, key: str, calls: int) -> dict[str, float]:
    """Server CPU ms per call: a run of each kind, one after the other."""
    port = int(url.rsplit(":", 1)[1])
    callers = Callers(url, key)
    spent: dict[str, float] = {}
    for name in (OURS, STRAIGHT):
        before = server_cpu_s(port)
        for i in range(calls):
            await callers.call(name, f"cpu-{i}")
        spent[name] = (server_cpu_s(port) - before) * 1000 / calls
    await callers.api.aclose()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    settings = {"ROLEFERRY_STRIPE_RATE_LIMIT": "100000/1", "ROLEFERRY_USER_RATE_LIMIT": "100000/1"}
    with roleferry_server(settings) as (url, key, _):
        # The simulator's own 25/s test-mode limit would throttle a tight loop.
        httpx.put(
            f"{url}/sandbox/_control/stripe", json={"rate_limit": {"limit": 100000, "period_s": 1}}
        ).raise_for_status()
        timings = asyncio.run(run(url, key, args.calls))
        cpu = asyncio.run(cpu_per_call(url, key, args.calls))
    print(f"{args.calls} checkouts each, alternating; ms")
    print(f"{'':32} {'p50':>7} {'p90':>7} {'p99':>7}")
    for name, values in timings.items():
        print(f"{name:32} {pct(values, 0.5):7.1f} {pct(values, 0.9):7.1f} {pct(values, 0.99):7.1f}")
    ours, bare = timings[OURS], timings[STRAIGHT]
    print(
        f"{'added by our API':32} {pct(ours, 0.5) - pct(bare, 0.5):7.1f} "
        f"{pct(ours, 0.9) - pct(bare, 0.9):7.1f} {pct(ours, 0.99) - pct(bare, 0.99):7.1f}"
    )
    print(
        f"server CPU per call, ms: our API {cpu[OURS]:.2f}, the SDK straight "
        f"{cpu[STRAIGHT]:.2f}, added by our API {cpu[OURS] - cpu[STRAIGHT]:.2f}"
    )


if __name__ == "__main__":
    main()
