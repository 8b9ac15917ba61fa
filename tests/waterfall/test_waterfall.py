"""The one waterfall, through the HTTP API, the real clients and the sandbox: search and bulk
answer alike, both fall through past an open or spent provider, a job says what it waits for
without holding its user's next job, and only complete answers are cached."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from roleferry.resilience.ratelimit import Priority, Window
from roleferry.sandbox.world import Person, World
from tests.support.live_server import LiveServer, live_server

WORLD = World(7)
TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("waterfall"),
        apollo_rate_limit="100000/3600",
        clay_rate_limit="100000/60",
        hunter_rate_limit="100000/60",
        attempt_timeout_s=0.5,
        breaker_open_s=60,
        user_budget_share=1.0,
        user_rate_limit="100000/1",
        no_hedge=["apollo", "clay", "hunter"],
    ) as live:
        yield live


@pytest.fixture
def live(server: LiveServer) -> Iterator[LiveServer]:
    server.reset()
    for provider in ("apollo", "clay", "hunter"):
        server.control(provider, rate_limit={"limit": 100000, "period_s": 3600})
    providers = server.runtime.providers
    assert providers is not None
    saved = {name: list(p.limiter.windows) for name, p in providers.policies.items()}
    yield server
    for name, windows in saved.items():
        providers.policies[name].limiter.windows[:] = windows


def people(start: int, count: int) -> list[Person]:
    return [p for c in WORLD.companies[start : start + 80] for p in c.people][:count]


def contacts(persons: list[Person]) -> list[dict[str, str]]:
    return [
        {"first_name": p.first_name, "last_name": p.last_name, "domain": p.company_domain}
        for p in persons
    ]


def job(live: LiveServer, persons: list[Person], key: str | None = None, **params: Any) -> str:
    auth = {"Authorization": f"Bearer {key or live.key}"}
    response = httpx.post(
        f"{live.url}/api/v1/enrichment-jobs",
        json={"contacts": contacts(persons)},
        params=params,
        headers=auth,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def status(live: LiveServer, job_id: str, key: str | None = None) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key or live.key}"}
    body: dict[str, Any] = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job_id}", headers=auth
    ).json()
    return body


def wait_for(
    live: LiveServer, job_id: str, done: Any, key: str | None = None, timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(live, job_id, key)
        if done(current):
            return current
        assert time.monotonic() < deadline, current
        time.sleep(0.2)


def results(live: LiveServer, job_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job_id}/results", headers=live.auth, timeout=30
    ).json()["results"]
    return rows


def spend(live: LiveServer, provider: str, period_s: float = 3600) -> None:
    """Our budget for `provider` becomes one call per `period_s`, and that call is taken."""
    providers = live.runtime.providers
    assert providers is not None
    limiter = providers.policies[provider].limiter
    limiter.windows[:] = [Window(1, period_s)]
    assert asyncio.run(limiter.try_acquire(Priority.INTERACTIVE)).granted


def enrich(live: LiveServer, person: Person, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/contacts/enrich",
        json={
            "first_name": person.first_name,
            "last_name": person.last_name,
            "domain": person.company_domain,
            **extra,
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_search_and_bulk_give_identical_answers_for_200_people(live: LiveServer) -> None:
    """The same 200 sandbox people get the same email, source and verdict by either path."""
    persons = people(300, 200)
    job_id = job(live, persons)
    done = wait_for(live, job_id, lambda j: j["status"] in TERMINAL)
    assert done["done"] == 200
    bulk = {(r["first_name"], r["last_name"], r["domain"]): r for r in results(live, job_id)}
    searcher = live.new_user(f"searcher-{time.time()}@example.com")
    differ = []
    for person in persons:
        answer = enrich(live, person, searcher).json()
        row = bulk[(person.first_name, person.last_name, person.company_domain)]
        sufficient = answer["status"] in ("verified", "likely")
        seen = (
            "found" if sufficient else "not_found",
            answer["email"] if sufficient else None,
            answer["source"] if sufficient else None,
        )
        if seen != (row["status"], row["email"], row["source"]):
            differ.append((person.name, seen, row))
    assert differ == [], differ[:4]
    assert sum(1 for r in bulk.values() if r["status"] == "found") > 100


def test_bulk_falls_through_when_apollos_budget_is_spent(live: LiveServer) -> None:
    """Apollo's budget spent for an hour: contacts go to Clay and Hunter at once, none waits."""
    spend(live, "apollo")
    persons = people(600, 30)
    started = time.monotonic()
    done = wait_for(live, job(live, persons), lambda j: j["status"] in TERMINAL, timeout=60)
    assert time.monotonic() - started < 30
    assert done["done"] == 30
    assert "apollo" not in done["by_provider"]
    assert done["found"] >= sum(
        1 for p in persons if WORLD.clay_has_email(p) and not WORLD.apollo_has_email(p)
    )
    assert live.calls("apollo") == 0
    unanswered = [r for r in results(live, done["id"]) if r["status"] == "not_found"]
    assert all("apollo unavailable" in r["reason"] for r in unanswered)


def test_bulk_falls_through_when_apollos_breaker_is_open(live: LiveServer) -> None:
    """Apollo down: its breaker opens and the job finishes through Clay and Hunter."""
    live.control("apollo", down=True)
    persons = people(700, 40)
    done = wait_for(live, job(live, persons), lambda j: j["status"] in TERMINAL, timeout=60)
    assert done["done"] == 40
    assert done["found"] > 0
    assert "apollo" not in done["by_provider"]
    assert live.calls("apollo") <= 10, "the breaker stops calls after a few failures"


def test_a_waiting_job_says_so_and_does_not_hold_the_users_next_job(live: LiveServer) -> None:
    """Every provider spent: the job's waiting_for names the provider, when (ISO-Z) and why;
    the user's next job runs meanwhile (the waiting one gave its queue slot back)."""
    for provider in ("apollo", "clay", "hunter"):
        spend(live, provider, period_s=30)
    first = job(live, people(800, 3))
    waiting = wait_for(
        live,
        first,
        lambda j: j["waiting_for"] is not None and j["waiting_for"].get("provider"),
        timeout=30,
    )["waiting_for"]
    assert waiting["provider"] in ("apollo", "clay", "hunter")
    assert waiting["until"].endswith("Z")
    assert datetime.fromisoformat(waiting["until"]).timestamp() > time.time() + 5
    assert "budget" in waiting["reason"]
    assert status(live, first)["status"] == "running"
    providers = live.runtime.providers
    assert providers is not None
    for policy in providers.policies.values():
        policy.limiter.windows[:] = [Window(100000, 3600)]
    asyncio.run(providers.store.clear())
    second = job(live, people(820, 3))
    done = wait_for(live, second, lambda j: j["status"] in TERMINAL, timeout=20)
    assert done["done"] == 3
    assert status(live, first)["status"] == "running", "the first still sleeps"


def test_max_wait_s_is_a_job_option_kept_on_the_job(live: LiveServer) -> None:
    """`max_wait_s: 0` in the body: Apollo's budget, spent for 30 s (within the default 60),
    is not waited for, the job goes on through Clay and Hunter and shows the option; without
    it a job shows the default; query and body disagreeing, or a non-number, is a 422."""
    spend(live, "apollo", period_s=30)
    response = httpx.post(
        f"{live.url}/api/v1/enrichment-jobs",
        json={"contacts": contacts(people(840, 3)), "max_wait_s": 0},
        headers=live.auth,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    done = wait_for(live, response.json()["id"], lambda j: j["status"] in TERMINAL, timeout=30)
    assert done["max_wait_s"] == 0
    assert done["done"] == 3
    assert "apollo" not in done["by_provider"]
    assert done["waiting_for"] is None
    providers = live.runtime.providers
    assert providers is not None
    providers.policies["apollo"].limiter.windows[:] = [Window(100000, 3600)]
    assert status(live, job(live, people(860, 1)))["max_wait_s"] == 60
    clash = httpx.post(
        f"{live.url}/api/v1/enrichment-jobs",
        json={"contacts": contacts(people(880, 1)), "max_wait_s": 5},
        params={"max_wait_s": 10},
        headers=live.auth,
        timeout=30,
    )
    assert clash.status_code == 422
    assert clash.json()["error"]["details"] == {"field": "max_wait_s"}
    bad = httpx.post(
        f"{live.url}/api/v1/enrichment-jobs",
        json={"contacts": contacts(people(880, 1)), "max_wait_s": "soon"},
        headers=live.auth,
        timeout=30,
    )
    assert bad.status_code == 422
    assert "max_wait_s must be a number" in bad.json()["error"]["message"]


def search(live: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{live.url}/api/v1/contacts/search", json=body, headers=live.auth, timeout=30
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_degraded_answer_is_not_served_after_recovery(live: LiveServer) -> None:
    """An answer given while Apollo was down is marked degraded and not cached: once Apollo
    is back, the same search asks it."""
    target = next(
        c for c in WORLD.companies if WORLD.apollo_knows_company(c) and WORLD.clay_knows_company(c)
    )
    body = {"domain": target.domain, "titles": ["a", "e"], "limit": 5}
    live.control("apollo", down=True)
    during = search(live, body)
    assert during["degraded"] is True
    assert during["attempts"][0]["outcome"] != "ok"
    live.reset()
    live.control("apollo", rate_limit={"limit": 100000, "period_s": 3600})
    after = search(live, body)
    assert after["cached"] is False
    assert after["degraded"] is False
    assert after["provider"] == "apollo"
    assert search(live, body)["cached"] is True, "a complete answer is cached"


def test_refresh_bypasses_the_cache(live: LiveServer) -> None:
    """`refresh: true` asks the providers again and stores the new answer."""
    target = next(c for c in WORLD.companies if WORLD.apollo_knows_company(c))
    body = {"domain": target.domain, "titles": ["a", "e"], "limit": 3}
    search(live, body)
    calls = live.calls("apollo")
    assert search(live, body)["cached"] is True
    assert live.calls("apollo") == calls
    fresh = search(live, {**body, "refresh": True})
    assert fresh["cached"] is False
    assert live.calls("apollo") > calls


def test_retry_after_is_the_earliest_time_a_provider_frees(live: LiveServer) -> None:
    """Every budget spent: 503, and Retry-After is when the first provider has room again,
    not a made-up second."""
    spend(live, "apollo", period_s=3600)
    spend(live, "clay", period_s=120)
    spend(live, "hunter", period_s=600)
    response = httpx.post(
        f"{live.url}/api/v1/contacts/search",
        json={"domain": "domaur.com", "titles": ["VP"]},
        headers=live.auth,
        timeout=30,
    )
    assert response.status_code == 503
    retry_after = int(response.headers["retry-after"])
    assert abs(retry_after - 120) <= 3, retry_after
    attempts = response.json()["error"]["details"]["attempts"]
    assert [a["outcome"] for a in attempts] == ["skipped_budget_exhausted"] * 3
    assert math.isclose(
        retry_after, float(attempts[1]["detail"].rsplit(" ", 1)[1].rstrip("s")), abs_tol=3
    )
