"""Hedged interactive calls: a provider slower than its usual time gets the next one started
beside it, and the first useful answer wins."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from roleferry.sandbox.world import World
from tests.support.live_server import LiveServer, live_server

WORLD = World(7)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("hedging"),
        apollo_rate_limit="100000/3600",
        search_cache_ttl_s=0,
        no_hedge=["clay"],
    ) as server:
        server.reset()
        server.control("apollo", rate_limit={"limit": 100000, "period_s": 3600})
        yield server


def test_a_slow_apollo_is_hedged_with_clay(live: LiveServer) -> None:
    """Apollo answering in 2 s: Clay starts after ~0.3 s, answers, and Apollo's call is
    cancelled; the search takes well under Apollo's 2 s."""
    live.control("apollo", latency_ms=2000)
    target = next(
        c
        for c in WORLD.companies
        if WORLD.clay_knows_company(c) and any(WORLD.clay_has_email(p) for p in c.people)
    )
    started = time.monotonic()
    response = httpx.post(
        f"{live.url}/api/v1/contacts/search",
        json={"domain": target.domain, "titles": ["a", "e"], "limit": 5},
        headers=live.auth,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    body = response.json()
    assert response.status_code == 200, body
    outcomes = {a["provider"]: a["outcome"] for a in body["attempts"]}
    assert outcomes["apollo"] == "cancelled_hedge"
    assert outcomes["clay"] == "ok"
    assert body["degraded"] is True
    assert elapsed < 1.9


def test_hedging_can_be_turned_off_per_provider(live: LiveServer) -> None:
    """ROLEFERRY_NO_HEDGE=clay: a slow Clay is waited for, Hunter is not started beside it."""
    live.control("apollo", down=True)
    live.control("clay", latency_ms=800)
    target = next(c for c in WORLD.companies if WORLD.clay_knows_company(c))
    response = httpx.post(
        f"{live.url}/api/v1/contacts/search",
        json={"domain": target.domain, "titles": ["a", "e"], "limit": 5, "deadline_s": 5},
        headers=live.auth,
        timeout=30,
    )
    outcomes = [(a["provider"], a["outcome"]) for a in response.json()["attempts"]]
    assert ("clay", "cancelled_hedge") not in outcomes
    assert ("clay", "ok") in outcomes or ("clay", "empty") in outcomes


def test_a_rival_that_failed_beside_a_slow_provider_is_not_asked_again(live: LiveServer) -> None:
    """Apollo slow and then failing, Clay (started beside it) down: Clay's failure is its
    answer for this search; the waterfall goes on to Hunter without asking Clay a second time."""
    live.reset()
    live.control("apollo", latency_ms=1500, error_rate=1.0)
    live.control("clay", down=True)
    live.control("hunter", down=True)
    response = httpx.post(
        f"{live.url}/api/v1/contacts/search",
        json={"domain": WORLD.companies[3].domain, "titles": ["a"], "deadline_s": 6},
        headers=live.auth,
        timeout=30,
    )
    assert response.status_code == 503, response.text
    asked = [a["provider"] for a in response.json()["error"]["details"]["attempts"]]
    assert asked.count("clay") == 1, asked
    assert asked.count("apollo") == 1, asked
