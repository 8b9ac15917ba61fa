"""Webhook ingestion on the embedded default (SQLite), against a running `roleferry serve`.

1. Capacity: `--senders` concurrent senders post signed SendGrid batches of 100 events as fast
   as they are acknowledged; in the same run, the same senders post the same bodies to a bare
   200 route of the same server (the ceiling). Printed: events/s acknowledged, and our share
   of the bare route's rate.
2. Sustained: batches posted at a fixed `--rate` events/s (open loop, as SendGrid's servers
   push), for `--seconds`: acknowledgement p50/p99 and lag p99 (sent → applied, read from the
   inbox).

    .venv/bin/python bench/webhook_ingest.py [--seconds 10] [--senders 16] [--rate 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from _serve import roleferry_server
from roleferry.providers.sandbox_credentials import sendgrid_signing_key
from roleferry.sandbox.sendgrid import SendGridState

SIGNER = SendGridState(7, sendgrid_signing_key(7), "")
TYPES = ("processed", "delivered", "open", "click", "bounce")


def batch(size: int) -> tuple[bytes, list[str]]:
    now = int(time.time())
    events = []
    for i in range(size):
        event_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        events.append(
            {
                "email": f"person{i}@example.com",
                "timestamp": now,
                "event": TYPES[i % len(TYPES)],
                "sg_event_id": event_id,
                "sg_message_id": f"MSG{i}.filterdrecv-1.0.0",
                "smtp-id": f"<MSG{i}@ismtpd>",
                "category": ["outreach"],
                "outreach_id": f"out_{i}",
            }
        )
    return json.dumps(events).encode(), [e["sg_event_id"] for e in events]


async def sustained(url: str, rate: float, seconds: float, size: int) -> dict[str, Any]:
    """Posts a batch every size/rate seconds whatever the answers' pace, for `seconds`."""
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    interval = size / rate
    # Made and signed before the clock starts, so the sender's own work does not sit in the
    # latencies it measures.
    prepared = []
    for _ in range(int(seconds * rate / size) + 1):
        body, ids = batch(size)
        prepared.append((body, ids, {"content-type": "application/json", **SIGNER.sign(body)}))
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one() -> None:
            body, ids, headers = prepared.pop()
            wall = time.time()
            started = time.perf_counter()
            response = await client.post(f"{url}/webhooks/sendgrid", content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code == 200:
                for event_id in ids:
                    sent_at[event_id] = wall

        tasks = []
        begun = time.perf_counter()
        n = 0
        while time.perf_counter() - begun < seconds:
            tasks.append(asyncio.create_task(one()))
            n += 1
            await asyncio.sleep(max(0.0, begun + n * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "requests": len(latencies),
        "sent_at": sent_at,
    }


async def load(url: str, path: str, seconds: float, senders: int, size: int) -> dict[str, Any]:
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    acknowledged = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def sender() -> None:
            nonlocal acknowledged
            while time.monotonic() < stop:
                body, ids = batch(size)
                headers = {"content-type": "application/json", **SIGNER.sign(body)}
                started = time.perf_counter()
                wall = time.time()
                response = await client.post(f"{url}{path}", content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    acknowledged += size
                    for event_id in ids:
                        sent_at[event_id] = wall

        begun = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        elapsed = time.perf_counter() - begun
    latencies.sort()
    return {
        "events_per_s": acknowledged / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "requests": len(latencies),
        "sent_at": sent_at,
    }


def lag_p99(database: Path, sent_at: dict[str, float], timeout: float = 60) -> tuple[float, int]:
    deadline = time.monotonic() + timeout
    with sqlite3.connect(database) as db:
        while db.execute("SELECT count(*) FROM webhook_events WHERE status = 'pending'").fetchone()[
            0
        ]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        rows = db.execute(
            "SELECT event_id, applied_at FROM webhook_events WHERE applied_at IS NOT NULL"
        )
        lags = sorted(
            datetime.fromisoformat(applied).timestamp() - sent_at[event_id]
            for event_id, applied in rows
            if event_id in sent_at
        )
    if not lags:
        return float("nan"), 0
    return lags[min(len(lags) - 1, int(len(lags) * 0.99))], len(lags)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10_000, help="events/s in the sustained run")
    args = parser.parse_args()
    with roleferry_server({"ROLEFERRY_BENCH_ROUTES": "1"}) as (url, _key, data):
        bare = asyncio.run(load(url, "/_bench/bare", args.seconds, args.senders, args.batch))
        ours = asyncio.run(load(url, "/webhooks/sendgrid", args.seconds, args.senders, args.batch))
        lag_p99(data / "rf.sqlite", {})
        steady = asyncio.run(sustained(url, args.rate, args.seconds, args.batch))
        lag, applied = lag_p99(data / "rf.sqlite", steady["sent_at"])
    share = ours["events_per_s"] / bare["events_per_s"]
    print(f"capacity: senders={args.senders} batch={args.batch} seconds={args.seconds}")
    print(f"{'route':<20} {'events/s':>10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, run in (("bare 200 (ceiling)", bare), ("/webhooks/sendgrid", ours)):
        print(
            f"{name:<20} {run['events_per_s']:>10.0f} {run['requests']:>9} "
            f"{run['p50_ms']:>8.1f} {run['p99_ms']:>8.1f}"
        )
    print(f"events acknowledged/s: {ours['events_per_s']:.0f} (target >= 10,000)")
    print(f"share of the bare route's rate: {share:.0%} (target >= 60%)")
    print(
        f"sustained at {args.rate:.0f} events/s for {args.seconds:g} s: "
        f"{steady['requests']} batches"
    )
    print(
        f"ack p50 {steady['p50_ms']:.1f} ms, p99 {steady['p99_ms']:.1f} ms (target p99 <= 100 ms)"
    )
    print(f"lag p99 sent -> applied: {lag:.3f} s over {applied} events (target <= 2 s)")


if __name__ == "__main__":
    main()
