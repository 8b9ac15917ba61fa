"""A bulk enrichment job and credits, through the API, the durable workflow and the sandbox:
without enough credits it waits with that reason instead of failing; a purchase wakes it at
once (the webhook's grant sends it a wake through DBOS), a grant that wakes nothing is still
found by the job's own poll; it settles to what it found, releasing the rest of its hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from roleferry.db import Database
from roleferry.payments.fulfilment import Payments
from roleferry.sandbox.world import World
from tests.support.live_server import LiveServer, live_server

WORLD = World(7)
DONE = ("succeeded", "partially_succeeded", "failed")


@contextmanager
def waiting_job(
    tmp_path: Path, credits_retry_s: float, **overrides: Any
) -> Iterator[tuple[LiveServer, str]]:
    """A live server and a job of 6 contacts with 2 credits: running, waiting for credits."""
    persons = [p for c in WORLD.companies[:40] for p in c.people][:6]
    rows = [
        {"first_name": p.first_name, "last_name": p.last_name, "domain": p.company_domain}
        for p in persons
    ]
    with live_server(
        tmp_path,
        billing="on",
        starting_credits=2,
        credits_retry_s=credits_retry_s,
        apollo_rate_limit="100000/3600",
        **overrides,
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
        wait_until(
            live,
            job_id,
            lambda job: ((job.get("waiting_for") or {}).get("reason") or "").startswith(
                "waiting for credits"
            ),
        )
        assert job(live, job_id)["status"] == "running"
        yield live, job_id


def job(live: LiveServer, job_id: str) -> dict[str, Any]:
    got: dict[str, Any] = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job_id}", headers=live.auth, timeout=10
    ).json()
    return got


def wait_until(live: LiveServer, job_id: str, done: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not done(current := job(live, job_id)):
        assert time.monotonic() < deadline, current
        time.sleep(0.2)
    return current


def assert_settled(live: LiveServer, job_id: str, bought: int) -> None:
    """One credit per email found (not guessed), nothing left reserved."""
    results = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job_id}/results", headers=live.auth, timeout=10
    ).json()["results"]
    found = sum(1 for r in results if r["status"] == "found" and r.get("email_status") != "guessed")
    credits = httpx.get(f"{live.url}/api/v1/credits", headers=live.auth, timeout=10).json()
    assert found >= 1
    assert (credits["available"], credits["reserved"]) == (2 + bought - found, 0)


def test_a_purchase_wakes_a_job_waiting_for_credits(tmp_path: Path) -> None:
    """The job would ask again only in 10 minutes; the pack is paid on the hosted page and
    only the webhook fulfils it (no success-page call): the job resumes and finishes now."""
    with waiting_job(tmp_path, credits_retry_s=600) as (live, job_id):
        buy_and_finish(live, job_id)


def test_the_same_wake_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """On PostgreSQL the wake travels through DBOS's notifications there."""
    with waiting_job(tmp_path, credits_retry_s=600, database_url=postgres_url) as (live, job_id):
        buy_and_finish(live, job_id)


def buy_and_finish(live: LiveServer, job_id: str) -> None:
    """Pays a small pack on the hosted page; the job then finishes and is settled."""
    made = httpx.post(
        f"{live.url}/api/v1/checkout", json={"pack": "small"}, headers=live.auth, timeout=10
    ).json()
    paid = httpx.post(
        f"{live.url}/sandbox/stripe/pay/{made['session_id']}",
        data={"card_number": "4242424242424242"},
    )
    assert paid.status_code == 303
    wait_until(live, job_id, lambda j: j["status"] in DONE)
    assert_settled(live, job_id, bought=100)


def test_a_grant_that_wakes_nothing_is_found_by_the_poll(tmp_path: Path) -> None:
    """Credits granted from another process's database connection (no wake sent from
    there): the job's own poll, every 0.5 s here, finds them and it finishes."""
    with waiting_job(tmp_path, credits_retry_s=0.5) as (live, job_id):
        me = httpx.get(f"{live.url}/api/v1/me", headers=live.auth, timeout=10).json()
        user_id = me["id"]

        async def grant() -> None:
            db = Database(live.runtime.settings.database_url)
            try:
                async with db.write_session() as session:
                    outcome = await Payments(session).fulfil(
                        {
                            "id": "cs_test_elsewhere",
                            "client_reference_id": user_id,
                            "payment_status": "paid",
                            "status": "complete",
                            "amount_total": 1000,
                            "currency": "usd",
                            "metadata": {"credits": "100", "pack": "small"},
                        }
                    )
                assert outcome == "credited 100"
            finally:
                await db.dispose()

        asyncio.run(grant())
        wait_until(live, job_id, lambda j: j["status"] in DONE)
        assert_settled(live, job_id, bought=100)
