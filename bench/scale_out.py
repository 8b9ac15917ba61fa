"""Scale-out on PostgreSQL + Redis: the same load against 1 and then 2 `roleferry serve`
processes (each with its own port, sandbox and DBOS executor; one database, one Redis).

1. Webhook ingestion: `--events` unique signed SendGrid events in batches of 100, posted by
   `--senders` concurrent senders spread over the processes, each batch retried until
   acknowledged. Then wait (at most `--cutoff` s) until every event is applied.
2. Bulk enrichment that is not provider-bound: `--jobs` users each submit a job of
   `--contacts` distinct people, against the simulators with no latency and limits far above
   the load, so the work is ours (parsing, planning, saving, DBOS steps).

Per run: published = completed + missing + cut off (a run where that fails does not count),
throughput, p50/p99 (webhooks: acknowledgement and applied lag; bulk: job duration), CPU
seconds of each roleferry process, of PostgreSQL (all its backends: other users of the
machine included) and of this load generator, and throughput per roleferry CPU-second. At the
end: the 2-vs-1 ratio of throughput, and of throughput per CPU-second (the goal is that a
second process adds at least 0.7 of the first's throughput per CPU it gets).

    .venv/bin/python bench/scale_out.py [--events 10000] [--jobs 8] [--contacts 250]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from redis import Redis
from sqlalchemy.engine import make_url

from _serve import free_port
from roleferry.providers.sandbox_credentials import sendgrid_signing_key
from roleferry.sandbox.sendgrid import SendGridState
from roleferry.sandbox.world import World

SIGNER = SendGridState(7, sendgrid_signing_key(7), "")
TICK = os.sysconf("SC_CLK_TCK")
UNLIMITED = "1000000/1"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL process now alive."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_s(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return found


def postgres_cpu_since(start: dict[int, float]) -> float:
    """What PostgreSQL's processes used since `start`, counting those alive at the end (a
    backend that exited meanwhile is lost; one started meanwhile counts whole)."""
    return sum(now - start.get(pid, 0.0) for pid, now in postgres_cpu().items())


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (every process on the machine)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Deployment:
    urls: list[str]
    pids: list[int]
    database_url: str
    key: str
    cpu_start: list[float] = field(default_factory=list)

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return list(conn.execute(query).fetchall())  # type: ignore[arg-type]


@contextmanager
def deployment(processes: int, postgres: str, redis_url: str) -> Iterator[Deployment]:
    admin = make_url(postgres).set(drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    name = f"rf_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.set(database=name).render_as_string(hide_password=False)
    redis = Redis.from_url(redis_url)
    for key in redis.scan_iter("roleferry:*"):
        redis.delete(key)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            urls = []
            for i in range(processes):
                data = Path(tmp) / f"p{i}"
                data.mkdir()
                port = free_port()
                env = {
                    **{
                        k: v
                        for k, v in os.environ.items()
                        if not k.startswith(("ROLEFERRY_", "PROMETHEUS_"))
                    },
                    "ROLEFERRY_DATA_DIR": str(data),
                    "ROLEFERRY_DATABASE_URL": database_url,
                    "ROLEFERRY_REDIS_URL": redis_url,
                    "ROLEFERRY_LOG_LEVEL": "WARNING",
                    "ROLEFERRY_APOLLO_RATE_LIMIT": UNLIMITED,
                    "ROLEFERRY_CLAY_RATE_LIMIT": UNLIMITED,
                    "ROLEFERRY_HUNTER_RATE_LIMIT": UNLIMITED,
                    "ROLEFERRY_SANDBOX_FAULTS": ",".join(
                        f"{p}:rate_limit={UNLIMITED}" for p in ("apollo", "clay", "hunter")
                    ),
                }
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "roleferry", "serve", "--port", str(port)],
                        env=env,
                        cwd=data,
                        stdout=subprocess.DEVNULL,
                        stderr=(data / "log").open("w"),
                    )
                )
                urls.append(f"http://127.0.0.1:{port}")
            for url, proc in zip(urls, procs, strict=True):
                deadline = time.monotonic() + 90
                while True:
                    try:
                        if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("roleferry serve did not start")
                    time.sleep(0.2)
            key_file = next(Path(tmp).glob("p*/local-api-key"))
            yield Deployment(
                urls, [p.pid for p in procs], database_url, key_file.read_text().strip()
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            redis.close()
            with psycopg.connect(conninfo, autocommit=True) as conn:
                for db in (name, f"{name}_dbos"):
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class Meter:
    """CPU of each roleferry process, PostgreSQL, this generator and the machine, over a run."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = [cpu_s(p) for p in pids]
        self.pg = postgres_cpu()
        self.me = cpu_s(os.getpid())
        self.machine = machine_busy_s()
        self.t0 = time.monotonic()

    def read(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        per = [round(cpu_s(p) - s, 2) for p, s in zip(self.pids, self.start, strict=True)]
        return {
            "wall_s": round(wall, 2),
            "roleferry_cpu_s": per,
            "postgres_cpu_s": round(postgres_cpu_since(self.pg), 2),
            "generator_cpu_s": round(cpu_s(os.getpid()) - self.me, 2),
            "machine_busy_s": round(machine_busy_s() - self.machine, 2),
        }


def sendgrid_batch(start: int, size: int, now: int) -> bytes:
    events = [
        {
            "email": f"person{i}@example.com",
            "timestamp": now,
            "event": "delivered",
            "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
            "sg_message_id": f"MSG{i}.filter-1.0.0",
        }
        for i in range(start, start + size)
    ]
    return json.dumps(events).encode()


async def webhooks(dep: Deployment, events: int, senders: int, cutoff_s: float) -> dict[str, Any]:
    size = 100
    bodies = [sendgrid_batch(i, size, int(time.time())) for i in range(0, events, size)]
    pending = list(enumerate(bodies))
    acks: list[float] = []
    targets = itertools.cycle(dep.urls)
    meter = Meter(dep.pids)

    async def sender(client: httpx.AsyncClient) -> None:
        while pending:
            _, body = pending.pop()
            while True:
                headers = {"content-type": "application/json", **SIGNER.sign(body)}
                started = time.monotonic()
                try:
                    response = await client.post(
                        f"{next(targets)}/webhooks/sendgrid", content=body, headers=headers
                    )
                    if response.status_code == 200:
                        acks.append(time.monotonic() - started)
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(sender(client) for _ in range(senders)))
    acked_s = time.monotonic() - meter.t0
    deadline = time.monotonic() + cutoff_s
    while time.monotonic() < deadline:
        if dep.sql("SELECT count(*) FROM webhook_events WHERE status = 'pending'")[0][0] == 0:
            break
        await asyncio.sleep(0.05)
    cpu = meter.read()
    stored, completed, cut_off = dep.sql(
        "SELECT count(*), count(*) FILTER (WHERE status <> 'pending'), "
        "count(*) FILTER (WHERE status = 'pending') FROM webhook_events"
    )[0]
    lag = dep.sql(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
        "applied_at - received_at)), percentile_cont(0.99) WITHIN GROUP (ORDER BY "
        "extract(epoch FROM applied_at - received_at)) FROM webhook_events "
        "WHERE applied_at IS NOT NULL"
    )[0]
    return {
        "published": events,
        "completed": completed,
        "missing": events - stored,
        "cut_off": cut_off,
        "throughput": round(completed / cpu["wall_s"], 1),
        "ack_throughput": round(events / acked_s, 1),
        "ack_p50_ms": round(pct(acks, 0.5) * 1000, 1),
        "ack_p99_ms": round(pct(acks, 0.99) * 1000, 1),
        "lag_p50_ms": round(float(lag[0] or 0) * 1000, 1),
        "lag_p99_ms": round(float(lag[1] or 0) * 1000, 1),
        **cpu,
    }


async def bulk(dep: Deployment, jobs: int, contacts: int, cutoff_s: float) -> dict[str, Any]:
    from roleferry.db import Database
    from roleferry.users import service

    world = World(7)
    people = [p for c in world.companies for p in c.people]
    database = Database(dep.database_url)
    keys = []
    async with database.session() as session:
        for _ in range(jobs):
            made = await service.create_user(session, f"bench-{uuid.uuid4().hex[:8]}@example.com")
            keys.append(made.key.raw)
    await database.dispose()
    offset = secrets.randbelow(len(people) - jobs * contacts)
    meter = Meter(dep.pids)
    ids: dict[str, tuple[str, str, float]] = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for j, key in enumerate(keys):
            chunk = people[offset + j * contacts : offset + (j + 1) * contacts]
            url = dep.urls[j % len(dep.urls)]
            response = await client.post(
                f"{url}/api/v1/enrichment-jobs",
                json={
                    "contacts": [
                        {
                            "first_name": p.first_name,
                            "last_name": p.last_name,
                            "domain": p.company_domain,
                        }
                        for p in chunk
                    ]
                },
                headers={"Authorization": f"Bearer {key}"},
            )
            response.raise_for_status()
            ids[response.json()["id"]] = (url, key, time.monotonic())
        durations: list[float] = []
        deadline = time.monotonic() + cutoff_s
        open_jobs = dict(ids)
        while open_jobs and time.monotonic() < deadline:
            for job_id, (url, key, started) in list(open_jobs.items()):
                job = (
                    await client.get(
                        f"{url}/api/v1/enrichment-jobs/{job_id}",
                        headers={"Authorization": f"Bearer {key}"},
                    )
                ).json()
                if job["status"] in ("succeeded", "partially_succeeded", "failed", "cancelled"):
                    durations.append(time.monotonic() - started)
                    del open_jobs[job_id]
            await asyncio.sleep(0.1)
    cpu = meter.read()
    published = jobs * contacts
    stored, completed, cut_off = dep.sql(
        "SELECT count(*), count(*) FILTER (WHERE status <> 'pending'), "
        "count(*) FILTER (WHERE status = 'pending') FROM enrichment_items"
    )[0]
    return {
        "published": published,
        "completed": completed,
        "missing": published - stored,
        "cut_off": cut_off,
        "throughput": round(completed / cpu["wall_s"], 1),
        "job_p50_s": round(pct(durations, 0.5), 2),
        "job_p99_s": round(pct(durations, 0.99), 2),
        **cpu,
    }


def per_cpu(run: dict[str, Any]) -> float:
    return float(run["completed"] / max(0.01, sum(run["roleferry_cpu_s"])))


def report(name: str, runs: dict[int, dict[str, Any]]) -> None:
    for n, run in runs.items():
        holds = run["published"] == run["completed"] + run["missing"] + run["cut_off"]
        run["accounted"] = holds
        run["per_roleferry_cpu_s"] = round(per_cpu(run), 1)
        print(f"{name} with {n} process(es): {json.dumps(run)}")
    one, two = runs[1], runs[2]
    print(
        f"{name}: 2-vs-1 throughput {two['throughput'] / one['throughput']:.2f}; "
        f"per roleferry CPU-second {per_cpu(two) / per_cpu(one):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--contacts", type=int, default=250)
    parser.add_argument("--cutoff", type=float, default=120)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; load average before: {os.getloadavg()}")
    hooks: dict[int, dict[str, Any]] = {}
    jobs: dict[int, dict[str, Any]] = {}
    for n in (1, 2):
        with deployment(n, args.postgres, args.redis) as dep:
            hooks[n] = asyncio.run(webhooks(dep, args.events, args.senders, args.cutoff))
            jobs[n] = asyncio.run(bulk(dep, args.jobs, args.contacts, args.cutoff))
    report("webhooks", hooks)
    report("bulk", jobs)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
