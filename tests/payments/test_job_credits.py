"""A bulk enrichment job and credits, through the API, the durable workflow and the sandbox:
without enough credits it waits with that reason instead of failing, resumes on its own after
a pack is bought, and settles to what it found, releasing the rest of its hold."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from roleferry.sandbox.world import World
from tests.support.live_server import live_server

WORLD = World(7)


def test_a_job_waits_for_credits_and_resumes_after_a_purchase(tmp_path: Path) -> None:
    """2 credits for 6 contacts: waiting for credits; buy 100; the job finishes, charged one
    credit per email found, nothing left reserved."""
    persons = [p for c in WORLD.companies[:40] for p in c.people][:6]
    rows = [
        {"first_name": p.first_name, "last_name": p.last_name, "domain": p.company_domain}
        for p in persons
    ]
    with live_server(
        tmp_path,
        billing="on",
        starting_credits=2,
        credits_retry_s=0.5,
        apollo_rate_limit="100000/3600",
    ) as live:
        live.control("stripe", duplicate_rate=0.0)
        live.control("apollo", rate_limit={"limit": 100000, "period_s": 3600})
        created = httpx.post(
            f"{live.url}/api/v1/enrichment-jobs",
            json={"contacts": rows},
            headers=live.auth,
            timeout=30,
        )
        assert created.status_code in (200, 201, 202), created.text
        job_id = created.json()["id"]

        def job() -> dict[str, Any]:
            got: dict[str, Any] = httpx.get(
                f"{live.url}/api/v1/enrichment-jobs/{job_id}", headers=live.auth
            ).json()
            return got

        deadline = time.monotonic() + 60
        while not ((job().get("waiting_for") or {}).get("reason") or "").startswith(
            "waiting for credits"
        ):
            assert time.monotonic() < deadline, job()
            time.sleep(0.2)
        assert job()["status"] == "running"

        made = httpx.post(
            f"{live.url}/api/v1/checkout", json={"pack": "small"}, headers=live.auth, timeout=10
        ).json()
        httpx.post(
            f"{live.url}/sandbox/stripe/pay/{made['session_id']}",
            data={"card_number": "4242424242424242"},
        )
        httpx.get(f"{live.url}/api/v1/checkout/{made['session_id']}", headers=live.auth)

        while job()["status"] not in ("succeeded", "partially_succeeded", "failed"):
            assert time.monotonic() < deadline + 60, job()
            time.sleep(0.2)
        results = httpx.get(
            f"{live.url}/api/v1/enrichment-jobs/{job_id}/results", headers=live.auth
        ).json()["results"]
        found = sum(
            1 for r in results if r["status"] == "found" and r.get("email_status") != "guessed"
        )
        credits = httpx.get(f"{live.url}/api/v1/credits", headers=live.auth).json()
        assert found >= 1
        assert (credits["available"], credits["reserved"]) == (102 - found, 0)
