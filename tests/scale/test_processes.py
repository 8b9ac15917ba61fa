"""Several processes on one PostgreSQL: started together they migrate once; `serve --workers`
shows one /metrics for all its processes, and DogStatsD receives the same figures."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.scale.cluster import Proc, base_env, sql

pytestmark = pytest.mark.postgres


def test_serve_and_worker_starting_at_once_on_an_empty_database_migrate_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """Both come up; one applied the migrations under the advisory lock, the other found the
    schema (DBOS's system database too) up to date."""
    env = base_env(tmp_path, postgres_url, "", "http://127.0.0.1:9")
    del env["ROLEFERRY_REDIS_URL"]
    procs = [
        Proc("serve", ["serve"], env, tmp_path, free_port()),
        Proc("worker", ["worker"], env, tmp_path),
    ]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_up(postgres_url)
        migrated = [p.name for p in procs if "database_migrated" in p.log.read_text()]
        assert len(migrated) == 1, migrated
        assert len(sql(postgres_url, "SELECT version_num FROM alembic_version")) == 1
        system = postgres_url.rsplit("/", 1)
        assert sql(f"{system[0]}/{system[1]}_dbos", "SELECT count(*) FROM dbos.workflow_status")
    finally:
        for proc in procs:
            proc.stop()


def _listen_udp() -> tuple[socket.socket, list[tuple[bytes, tuple[str, int]]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    got: list[tuple[bytes, tuple[str, int]]] = []

    def receive() -> None:
        while sock.fileno() != -1:
            try:
                got.append(sock.recvfrom(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=receive, daemon=True).start()
    return sock, got


def _healthz_counts(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "roleferry_http_requests_total"
                and sample.labels["route"] == "/healthz"
            ):
                counts[sample.labels["status"]] += int(sample.value)
    return counts


def _statsd_healthz(got: list[tuple[bytes, tuple[str, int]]]) -> tuple[Counter[str], set[int]]:
    counts: Counter[str] = Counter()
    senders = set()
    line = re.compile(r"^roleferry_http_requests_total:([0-9.]+)\|c\|#(.*)$")
    for payload, sender in list(got):
        for text in payload.decode().splitlines():
            match = line.match(text)
            if not match:
                continue
            tags = dict(t.split(":", 1) for t in match.group(2).split(","))
            if tags.get("route") == "/healthz":
                counts[tags["status"]] += int(float(match.group(1)))
                senders.add(sender[1])
    return counts, senders


def test_metrics_sum_across_serve_workers_and_dogstatsd_sends_the_same(
    tmp_path: Path, postgres_url: str
) -> None:
    """`serve --workers 2`: 120 requests on fresh connections spread over both processes;
    /metrics (asked of either) counts 120, and the DogStatsD counts the processes sent add
    up to what /metrics shows."""
    sock, got = _listen_udp()
    env = base_env(tmp_path, postgres_url, "", "http://127.0.0.1:9")
    del env["ROLEFERRY_REDIS_URL"]
    env["ROLEFERRY_DOGSTATSD_URL"] = f"udp://127.0.0.1:{sock.getsockname()[1]}"
    env["ROLEFERRY_DOGSTATSD_INTERVAL_S"] = "0.2"
    port = free_port()
    serve = Proc("serve", ["serve", "--workers", "2"], env, tmp_path, port).start()
    try:
        serve.wait_up(postgres_url)
        # Both workers up: each has a heartbeat row.
        deadline = time.monotonic() + 60
        while len(sql(postgres_url, "SELECT * FROM executor_heartbeats")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        before = _healthz_counts(httpx.get(f"{serve.url}/metrics").text)["200"]
        for _ in range(120):
            assert httpx.get(f"{serve.url}/healthz").status_code == 200
        pids = {
            m.group(1)
            for f in (tmp_path / f"metrics-{port}").glob("counter_*.db")
            if (m := re.search(r"_(\d+)\.db$", f.name))
        }
        assert len(pids) >= 2, "both processes counted requests"
        shown = _healthz_counts(httpx.get(f"{serve.url}/metrics").text)
        assert shown["200"] == before + 120
        deadline = time.monotonic() + 30
        while (sent := _statsd_healthz(got))[0] != shown:
            assert time.monotonic() < deadline, (sent, shown)
            time.sleep(0.2)
        assert len(sent[1]) >= 2, "each process sends its own part"

        # One process dies (uvicorn starts another): what it counted still counts, and its
        # live gauges are dropped.
        dead = int(sorted(pids)[0])
        os.kill(dead, signal.SIGKILL)
        folder = tmp_path / f"metrics-{port}"
        deadline = time.monotonic() + 60
        while (folder / f"gauge_livemostrecent_{dead}.db").exists():
            assert time.monotonic() < deadline, "the dead process's gauges stayed"
            try:
                after = httpx.get(f"{serve.url}/metrics", timeout=5).text
            except httpx.TransportError:
                continue
            time.sleep(0.2)
        assert _healthz_counts(after)["200"] == shown["200"]
        assert "roleferry_circuit_state" in after
    finally:
        serve.stop()
        sock.close()
