"""Durability and fairness: a job survives SIGKILL with every contact done once, and one
user's big job does not starve another's small one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from roleferry.sandbox.world import World
from tests.conftest import free_port, start_roleferry
from tests.enrichment.test_jobs_api import TERMINAL, contacts, create, people, results
from tests.support.live_server import LiveServer, live_server

WORLD = World(7)


def status(url: str, key: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/api/v1/enrichment-jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
    )
    job: dict[str, Any] = response.json()
    return job


def test_a_big_job_does_not_starve_a_small_one(tmp_path: Path) -> None:
    with live_server(tmp_path, apollo_rate_limit="100000/3600") as live:
        for provider in ("apollo", "clay", "hunter"):
            live.control(provider, latency_ms=80)
        other = live.new_user("small@example.com")
        big = create(live, {"contacts": contacts(people(300, 150))}).json()["id"]
        time.sleep(0.5)
        small = create(live, {"contacts": contacts(people(600, 20))}, key=other).json()["id"]
        finished: dict[str, float] = {}
        started = time.monotonic()
        while len(finished) < 2 and time.monotonic() - started < 120:
            for job_id, key in ((big, live.key), (small, other)):
                if job_id not in finished and status(live.url, key, job_id)["status"] in TERMINAL:
                    finished[job_id] = time.monotonic() - started
            time.sleep(0.2)
        assert finished[small] < finished[big] / 2, finished


@pytest.fixture
def standalone_sandbox(env: dict[str, str], tmp_path: Path) -> Any:
    port = free_port()
    fault = "apollo:latency_ms=150;rate_limit=100000/3600"
    proc = start_roleferry(["sandbox", "--fault", fault], env, tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


def test_sigkill_mid_job_then_restart_completes_every_contact_once(
    env: dict[str, str], tmp_path: Path, standalone_sandbox: str
) -> None:
    env = {
        **env,
        "ROLEFERRY_APOLLO_RATE_LIMIT": "100000/3600",
        "ROLEFERRY_DBOS_POLL_S": "0.1",
        **{
            f"ROLEFERRY_{p.upper()}_BASE_URL": f"{standalone_sandbox}/sandbox/{p}"
            for p in ("apollo", "clay", "hunter")
        },
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[str]:
        return start_roleferry(["serve"], env, tmp_path, port)

    first = start()
    key = (tmp_path / "local-api-key").read_text().strip()
    persons = people(700, 150)
    job_id = httpx.post(
        f"{url}/api/v1/enrichment-jobs",
        json={"contacts": contacts(persons)},
        headers={"Authorization": f"Bearer {key}"},
    ).json()["id"]
    deadline = time.monotonic() + 60
    while not 20 <= status(url, key, job_id)["done"] < 150:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = start()
    try:
        deadline = time.monotonic() + 90
        while (job := status(url, key, job_id))["status"] not in TERMINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["done"] == 150
        assert job["found"] + job["not_found"] == 150
        live = LiveServer(url, runtime=None, key=key)  # type: ignore[arg-type]
        rows = results(live, job_id)
        assert sorted(r["line"] for r in rows) == list(range(1, 151))
        truth = {(p.first_name, p.last_name, p.company_domain): p.email for p in persons}
        assert not [
            r
            for r in rows
            if r["email"] and r["email"] != truth[(r["first_name"], r["last_name"], r["domain"])]
        ]
        notes = [
            n
            for n in httpx.get(
                f"{url}/api/v1/notifications", headers={"Authorization": f"Bearer {key}"}
            ).json()
            if n["data"]["id"] == job_id
        ]
        assert len(notes) == 1, "the job finished once"
        stats = httpx.get(f"{standalone_sandbox}/sandbox/_control/stats").json()["providers"][
            "apollo"
        ]
        bulk_calls = sum(stats.get("/api/v1/people/bulk_match", {}).values())
        assert bulk_calls <= 15 + 5, "at most the one chunk in flight at the kill was asked again"
    finally:
        second.terminate()
        second.wait(20)
