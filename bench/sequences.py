"""Email sequences at scale, against the sandbox's SendGrid with its mail/send limit scaled
down (default 100 requests per 10 s, in the simulator and in our budget).

1. Throughput: N enrolments x 3 steps, delays compressed to `--delay` seconds, twice on fresh
   servers: the baseline sends one email per mail/send request
   (ROLEFERRY_SEQUENCE_PERSONALIZATIONS=1), then steps due together go batched (up to 1,000
   personalizations a request, the default). Printed for each: the time until every step is
   sent, the requests made and the lower bound the limit implies for them (`limit` per
   `period`, a sliding window: ceil(requests / limit) - 1 periods), 429s received, and
   duplicates in the simulator's mail log; then the batched run's speed-up over the baseline.
2. Sleeping enrolments: `--sleeping` enrolments whose first step is a day away. Printed: the
   rows they cost, the database size, the server's memory, and the time a restart takes
   until /healthz answers and until the first API call.

    .venv/bin/python bench/sequences.py [--enrolments 2000] [--limit 100] [--period 10]
        [--delay 1] [--sleeping 10000] [--baseline-enrolments N]

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _serve import free_port, rss_mib

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


def client(url: str, tmp: str) -> Any:
    """Calls the server's API as the local user (its key is in the data dir)."""
    key = (Path(tmp) / "local-api-key").read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}

    def api(method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(method, f"{url}{path}", headers=auth, timeout=120, **kw)
        response.raise_for_status()
        return response.json()

    return api


@dataclass
class Throughput:
    elapsed: float
    mails: int
    requests: int
    too_many: int
    duplicates: int


def throughput(
    args: argparse.Namespace, env: dict[str, str], port: int, tmp: str, enrolments: int
) -> Throughput:
    """One throughput run on a running server: enrol, wait for every run to finish, read the
    simulator's mail log and request counts."""
    url = f"http://127.0.0.1:{port}"
    api = client(url, tmp)

    sequence_id = setup(api, args.steps, args.delay, 0.0)
    started = time.monotonic()
    runs = enrol(api, sequence_id, enrolments, "t")
    while any(api("GET", f"/api/v1/sequence-runs/{r}")["remaining"] for r in runs):
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    mail = httpx.get(f"{url}/sandbox/_control/sendgrid/mail", timeout=120).json()
    copies = Counter((m["custom_args"]["enrollment_id"], m["custom_args"]["step"]) for m in mail)
    stats = httpx.get(f"{url}/sandbox/_control/stats").json()["providers"]["sendgrid"]
    sends = stats.get("/v3/mail/send", {})
    return Throughput(
        elapsed,
        len(mail),
        sum(n for status, n in sends.items() if status != "429"),
        sum(v.get("429", 0) for v in stats.values()),
        sum(n - 1 for n in copies.values()),
    )


def report(name: str, run: Throughput, args: argparse.Namespace, enrolments: int) -> None:
    # Steps after an unsubscribe or spam report are not sent: the bound is what the requests
    # actually made need.
    bound = max(0, math.ceil(run.requests / args.limit) - 1) * args.period
    print(f"{name}: {enrolments} enrolments x {args.steps} steps")
    print(
        f"  sent {run.mails} of {enrolments * args.steps} in {run.requests} mail/send requests; "
        f"duplicates {run.duplicates}; 429s {run.too_many}"
    )
    ratio = f"ratio {run.elapsed / bound:.3f}" if bound else "no request waited for the limit"
    print(f"  completion {run.elapsed:.1f} s; lower bound {bound:.1f} s; {ratio}")


def environment(tmp: str, spec: str, personalizations: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLEFERRY_")},
        "ROLEFERRY_DATA_DIR": tmp,
        "ROLEFERRY_DATABASE_URL": f"sqlite:///{tmp}/rf.sqlite",
        "ROLEFERRY_LOG_LEVEL": "WARNING",
        "ROLEFERRY_USER_RATE_LIMIT": "1000/1",
        "ROLEFERRY_BULK_SHARE": "1",
        "ROLEFERRY_STARTING_CREDITS": "1000000",  # billing on: each email is charged
        "ROLEFERRY_SENDGRID_RATE_LIMIT": spec,
        "ROLEFERRY_SEQUENCE_TICK_S": "0.2",
        "ROLEFERRY_SEQUENCE_PERSONALIZATIONS": str(personalizations),
        "ROLEFERRY_SANDBOX_FAULTS": f"sendgrid:rate_limit={spec}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrolments", type=int, default=2000)
    parser.add_argument(
        "--baseline-enrolments",
        type=int,
        default=None,
        help="Enrolments of the one-email-per-request baseline (default: --enrolments).",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--sleeping", type=int, default=10_000)
    args = parser.parse_args()
    spec = f"{args.limit}/{args.period:g}"
    baseline_n = args.baseline_enrolments or args.enrolments
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc, _ = start(environment(tmp, spec, 1), port, tmp)
        try:
            baseline = throughput(args, environment(tmp, spec, 1), port, tmp, baseline_n)
        finally:
            proc.terminate()
            proc.wait(30)
        report("baseline, one email per request", baseline, args, baseline_n)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = environment(tmp, spec, 1000)
        proc, first_start_s = start(env, port, tmp)
        try:
            batched = throughput(args, env, port, tmp, args.enrolments)
            report(
                "batched, up to 1,000 personalizations per request", batched, args, args.enrolments
            )
            per_email = (baseline.elapsed / baseline.mails, batched.elapsed / batched.mails)
            print(
                f"  per email {per_email[1] * 1000:.1f} ms against the baseline's "
                f"{per_email[0] * 1000:.1f} ms: {per_email[0] / per_email[1]:.1f}x faster; "
                f"{batched.mails / batched.requests:.0f} emails per request"
            )
            if args.sleeping:
                proc = sleeping(args, env, port, tmp, proc, first_start_s)
        finally:
            proc.terminate()
            proc.wait(30)


def sleeping(
    args: argparse.Namespace,
    env: dict[str, str],
    port: int,
    tmp: str,
    proc: subprocess.Popen[bytes],
    first_start_s: float,
) -> subprocess.Popen[bytes]:
    """`--sleeping` enrolments a day away, then a restart; returns the restarted server."""
    url = f"http://127.0.0.1:{port}"
    api = client(url, tmp)

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
        f"sleeping: {args.sleeping} enrolments (first step a day away), enrolled in {enrol_s:.1f} s"
    )
    print(
        f"  rows per enrolment: 1 enrolment + 1 send per step + 1 timeline entry; "
        f"database files {size / 2**20:.1f} MiB in all"
    )
    print(f"  server RSS before restart {before:.0f} MiB, after {after:.0f} MiB")
    print(
        f"  restart until /healthz {restart_s:.2f} s (an empty database's first start: "
        f"{first_start_s:.2f} s); first API call {first_call_s * 1000:.0f} ms"
    )
    return proc


if __name__ == "__main__":
    main()
