"""Webhook acknowledgements while a 10,000-row enrichment job is uploaded, on the embedded
default (SQLite), against a running `roleferry serve`.

Signed SendGrid batches are posted at a fixed rate (open loop, as SendGrid pushes). In the same
run: `--seconds` of that alone (the baseline), then `--uploads` uploads of a 10,000-row CSV one
after the other, each cancelled once accepted so that only the upload itself competes. Printed:
acknowledgement p50/p99 of the baseline and of the batches sent while an upload was in flight,
and their ratio.

    .venv/bin/python bench/upload_vs_webhooks.py [--seconds 10] [--rate 500] [--uploads 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx

from _serve import roleferry_server
from roleferry.sandbox.world import World
from webhook_ingest import SIGNER, batch

ROWS = 10_000
WARM_UP_S = 2.0


def csv_bytes(salt: int) -> bytes:
    """10,000 real people of the sandbox world; `salt` makes each upload a new job."""
    world = World(7)
    people = [p for c in world.companies for p in c.people][:ROWS]
    lines = ["first_name,last_name,domain,title"]
    lines += [f"{p.first_name},{p.last_name},{p.company_domain},run {salt}" for p in people]
    return ("\n".join(lines) + "\n").encode()


def _events(body: bytes) -> int:
    return body.count(b'"sg_event_id"')


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def signed(count: int, size: int) -> list[tuple[bytes, dict[str, str]]]:
    """Batches made and signed before the clock starts, so the sender's own work does not sit
    in the latencies it measures."""
    prepared = []
    for _ in range(count):
        body, _ids = batch(size)
        prepared.append((body, {"content-type": "application/json", **SIGNER.sign(body)}))
    return prepared


async def acks(
    client: httpx.AsyncClient,
    url: str,
    rate: float,
    prepared: list[tuple[bytes, dict[str, str]]],
    until: asyncio.Event,
) -> list[tuple[float, float]]:
    """Posts a batch every size/rate seconds until `until` is set; (sent at, latency) each,
    the latency infinite for a batch not acknowledged.
    Past the prepared batches, they are posted again (acknowledged as duplicates)."""
    interval = _events(prepared[0][0]) / rate
    samples: list[tuple[float, float]] = []
    counter = iter(range(10**9))

    async def one() -> None:
        body, headers = prepared[next(counter) % len(prepared)]
        sent = time.perf_counter()
        try:
            response = await client.post(f"{url}/webhooks/sendgrid", content=body, headers=headers)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        samples.append((sent, time.perf_counter() - sent if ok else float("inf")))

    tasks = []
    begun = time.perf_counter()
    n = 0
    while not until.is_set():
        tasks.append(asyncio.create_task(one()))
        n += 1
        await asyncio.sleep(max(0.0, begun + n * interval - time.perf_counter()))
    await asyncio.gather(*tasks)
    return samples


async def run(url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    uploads = [csv_bytes(i) for i in range(args.uploads)]
    expected_s = args.seconds + args.uploads * 10 + 10
    prepared = signed(int(expected_s * args.rate / args.batch), args.batch)
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        stop = asyncio.Event()
        sender = asyncio.create_task(acks(client, url, args.rate, prepared, stop))
        await asyncio.sleep(WARM_UP_S)
        baseline_start = time.perf_counter()
        await asyncio.sleep(args.seconds)
        baseline_end = time.perf_counter()
        windows: list[tuple[float, float]] = []
        for data in uploads:
            await asyncio.sleep(1.0)
            started = time.perf_counter()
            response = await client.post(
                f"{url}/api/v1/enrichment-jobs",
                headers=auth,
                files={"file": ("contacts.csv", data, "text/csv")},
            )
            windows.append((started, time.perf_counter()))
            response.raise_for_status()
            job = response.json()
            assert job["total"] == ROWS, job
            await client.post(f"{url}/api/v1/enrichment-jobs/{job['id']}/cancel", headers=auth)
        stop.set()
        samples = await sender
    baseline = [lat for sent, lat in samples if baseline_start <= sent < baseline_end]
    during = [lat for sent, lat in samples if any(a <= sent <= b for a, b in windows)]
    return {
        "baseline": baseline,
        "during": during,
        "upload_s": [b - a for a, b in windows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="baseline duration")
    parser.add_argument("--rate", type=float, default=500, help="webhook events/s")
    parser.add_argument("--batch", type=int, default=10, help="events per webhook request")
    parser.add_argument("--uploads", type=int, default=3)
    args = parser.parse_args()
    with roleferry_server({}) as (url, key, _data):
        result = asyncio.run(run(url, key, args))
    base, during = result["baseline"], result["during"]
    uploads = ", ".join(f"{s:.2f}" for s in result["upload_s"])
    print(
        f"webhooks: {args.rate:.0f} events/s in batches of {args.batch}; "
        f"{args.uploads} uploads of {ROWS:,} rows (each took {uploads} s)"
    )
    print(f"{'acks':<28} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (("baseline (no upload)", base), ("during a 10,000-row upload", during)):
        failed = sum(1 for v in values if v == float("inf"))
        print(
            f"{name:<28} {len(values):>9} {failed:>7} {pct(values, 0.5):>8.1f} "
            f"{pct(values, 0.99):>8.1f}"
        )
    print(f"p99 during the upload / baseline p99: {pct(during, 0.99) / pct(base, 0.99):.1f}x")


if __name__ == "__main__":
    main()
