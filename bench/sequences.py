"""Email sequences at scale, against the sandbox's SendGrid with its mail/send limit scaled
down (default 100 requests per 10 s, in the simulator and in our budget).

1. Throughput: N enrolments x 3 steps, delays compressed to `--delay` seconds. Printed: the
   time until every step is sent against the lower bound the limit implies (the mail/send
   requests made, `limit` per `period`, a sliding window: ceil(requests / limit) - 1 periods),
   their ratio, 429s received, and duplicates in the simulator's mail log.
2. Sleeping enrolments: `--sleeping` enrolments whose first step is a day away. Printed: the
   rows they cost, the database size, the server's memory, and the time a restart takes
   until /healthz answers and until the first API call.

    .venv/bin/python bench/sequences.py [--enrolments 2000] [--limit 100] [--period 10]
        [--delay 1] [--sleeping 10000]

Our budget uses the whole limit (ROLEFERRY_BULK_SHARE=1): sequences are the only bulk user
of SendGrid here, so the bound is the provider's limit itself.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from _serve import free_port

ALWAYS = {"days": list(range(7)), "start_hour": 0, "end_hour": 24}


def start(env: dict[str, str], port: int, cwd: str) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "roleferry", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("roleferry serve did not start") from None
            time.sleep(0.05)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup(api: Any, steps: int, delay: float, first_delay: float) -> str:
    sender = api(
        "POST",
        "/api/v1/senders",
        json={
            "email": "auto1@rf-send-01.com",
            "min_gap_s": 0,
            "jitter_s": 0,
            "daily_cap": 10_000,
            "warmup_start": 10_000,
        },
    )
    sequence = api(
        "POST",
        "/api/v1/sequences",
        json={
            "name": "bench",
            "sender_id": sender["id"],
            "steps": [
                {"delay_s": first_delay if n == 0 else delay, "subject": f"S{n}", "body": "b"}
                for n in range(steps)
            ],
            "window": ALWAYS,
            "domain_hourly_limit": 10_000,
        },
    )
    sequence_id: str = sequence["id"]
    return sequence_id


def enrol(api: Any, sequence_id: str, count: int, prefix: str) -> list[str]:
    runs = []
    for first in range(0, count, 5000):
        contacts = [
            {"email": f"{prefix}{i}@bench{i % 97}.org"}
            for i in range(first, min(count, first + 5000))
        ]
        runs.append(
            api(
                "POST", f"/api/v1/sequences/{sequence_id}/enrollments", json={"contacts": contacts}
            )["id"]
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrolments", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--sleeping", type=int, default=10_000)
    args = parser.parse_args()
    spec = f"{args.limit}/{args.period:g}"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ROLEFERRY_")},
            "ROLEFERRY_DATA_DIR": tmp,
            "ROLEFERRY_DATABASE_URL": f"sqlite:///{tmp}/rf.sqlite",
            "ROLEFERRY_LOG_LEVEL": "WARNING",
            "ROLEFERRY_USER_RATE_LIMIT": "1000/1",
            "ROLEFERRY_BULK_SHARE": "1",
            "ROLEFERRY_SENDGRID_RATE_LIMIT": spec,
            "ROLEFERRY_SEQUENCE_TICK_S": "0.2",
            "ROLEFERRY_SANDBOX_FAULTS": f"sendgrid:rate_limit={spec}",
        }
        proc, first_start_s = start(env, port, tmp)
        try:
            key = (Path(tmp) / "local-api-key").read_text().strip()
            auth = {"Authorization": f"Bearer {key}"}

            def api(method: str, path: str, **kw: Any) -> Any:
                response = httpx.request(method, f"{url}{path}", headers=auth, timeout=120, **kw)
                response.raise_for_status()
                return response.json()

            requests = args.enrolments * args.steps
            sequence_id = setup(api, args.steps, args.delay, 0.0)
            started = time.monotonic()
            runs = enrol(api, sequence_id, args.enrolments, "t")
            while any(api("GET", f"/api/v1/sequence-runs/{r}")["remaining"] for r in runs):
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            mail = httpx.get(f"{url}/sandbox/_control/sendgrid/mail", timeout=120).json()
            copies = Counter(
                (m["custom_args"]["enrollment_id"], m["custom_args"]["step"]) for m in mail
            )
            # Steps after an unsubscribe or spam report are not sent: the bound is what the
            # requests actually made need.
            lower_bound = (math.ceil(len(mail) / args.limit) - 1) * args.period
            stats = httpx.get(f"{url}/sandbox/_control/stats").json()["providers"]["sendgrid"]
            too_many = sum(v.get("429", 0) for v in stats.values())
            print(f"throughput: {args.enrolments} enrolments x {args.steps} steps, limit {spec}")
            duplicates = sum(n - 1 for n in copies.values())
            print(f"  sent {len(mail)} of {requests}; duplicates {duplicates}")
            print(
                f"  completion {elapsed:.1f} s; lower bound {lower_bound:.1f} s; "
                f"ratio {elapsed / lower_bound:.3f}; 429s {too_many}"
            )

            if not args.sleeping:
                return
            sleepy = setup(api, 1, 0, 86_400.0)
            enrol_started = time.monotonic()
            enrol(api, sleepy, args.sleeping, "s")
            enrol_s = time.monotonic() - enrol_started
            before = rss_mib(proc.pid)
            proc.terminate()
            proc.wait(30)
            size = sum(p.stat().st_size for p in Path(tmp).glob("rf.sqlite*"))
            proc, restart_s = start(env, port, tmp)
            first_call = time.monotonic()
            api("GET", "/api/v1/senders")
            first_call_s = time.monotonic() - first_call
            time.sleep(2)
            after = rss_mib(proc.pid)
            print(
                f"sleeping: {args.sleeping} enrolments (first step a day away), enrolled in "
                f"{enrol_s:.1f} s"
            )
            print(
                f"  rows per enrolment: 1 enrolment + 1 send per step + 1 timeline entry; "
                f"database files {size / 2**20:.1f} MiB in all"
            )
            print(f"  server RSS before restart {before:.0f} MiB, after {after:.0f} MiB")
            print(
                f"  restart until /healthz {restart_s:.2f} s (an empty database's first start: "
                f"{first_start_s:.2f} s); "
                f"first API call {first_call_s * 1000:.0f} ms"
            )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
