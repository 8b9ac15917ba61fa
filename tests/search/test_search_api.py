"""Contact search and enrichment through the HTTP API, the real clients and the sandbox:
the waterfall merges and dedupes, skips what is open or spent, and answers within 5 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from roleferry.sandbox.world import Company, World
from tests.support.live_server import LiveServer, live_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("search"),
        breaker_open_s=60,
        attempt_timeout_s=1.5,
        apollo_rate_limit="1000/3600",
    ) as live:
        yield live


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    server.reset()
    server.control("apollo", rate_limit={"limit": 1000, "period_s": 3600})
    return server


def post(
    live: LiveServer, path: str, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else live.auth
    return httpx.post(f"{live.url}/api/v1/contacts/{path}", json=body, headers=headers, timeout=15)


WORLD = World(7)


def company(pred: Any) -> Company:
    return next(c for c in WORLD.companies if pred(c))


def test_search_merges_and_dedupes_across_providers(live: LiveServer) -> None:
    target = company(
        lambda c: (
            WORLD.apollo_knows_company(c)
            and WORLD.clay_knows_company(c)
            and sum(
                1
                for p in c.people
                if WORLD.apollo_knows(p)
                and not WORLD.apollo_has_email(p)
                and WORLD.clay_has_email(p)
                and "engineer" in p.title.lower()
            )
            >= 1
        )
    )
    response = post(live, "search", {"domain": target.domain, "titles": ["engineer"], "limit": 50})
    assert response.status_code == 200
    body = response.json()
    assert body["provider"] == "apollo"
    contacts = body["contacts"]
    names = [c["full_name"] or f"{c['first_name']} {c['last_name']}" for c in contacts]
    assert len(names) == len(set(names)), "each person once"
    truth = {p.name: p for p in target.people}
    merged = [
        c
        for c in contacts
        if c["sources"].get("title") == "apollo" and c["sources"].get("email") == "clay"
    ]
    assert merged, "Apollo's person, Clay's email"
    for contact in contacts:
        if contact["email"] and contact["email_status"] == "verified":
            assert contact["email"] == truth[contact["full_name"]].email
    assert [a["provider"] for a in body["attempts"]][:2] == ["apollo", "clay"]


def test_results_are_cached_per_user(live: LiveServer) -> None:
    target = company(WORLD.apollo_knows_company)
    body = {"domain": target.domain, "titles": ["VP", "Head"], "limit": 5}
    first = post(live, "search", body).json()
    calls = live.calls("apollo")
    again = post(live, "search", {**body, "titles": ["head", "vp"]}).json()
    assert again["cached"] is True
    assert first["cached"] is False
    assert again["contacts"] == first["contacts"]
    assert live.calls("apollo") == calls, "a cached answer costs no provider call"
    other = live.new_user(f"other-{time.time()}@example.com")
    assert post(live, "search", body, key=other).json()["cached"] is False


@pytest.mark.parametrize(
    ("scenario", "faults"),
    [
        ("down", {"error_rate": 1.0, "error_status": 500}),
        ("hanging", {"hang": True}),
        ("slow", {"latency_ms": 2000}),
        ("429 storm", {"rate_limit": {"limit": 1, "period_s": 3600}}),
    ],
)
def test_answers_within_five_seconds_when_apollo_fails(
    live: LiveServer, scenario: str, faults: dict[str, Any]
) -> None:
    live.control("apollo", **faults)
    target = company(
        lambda c: WORLD.clay_knows_company(c) and any(WORLD.clay_has_email(p) for p in c.people)
    )
    started = time.monotonic()
    response = post(live, "search", {"domain": target.domain, "titles": ["a", "e"], "limit": 5})
    elapsed = time.monotonic() - started
    assert elapsed < 5, scenario
    assert response.status_code == 200, response.text
    assert response.json()["contacts"], scenario
    assert response.json()["attempts"][0]["provider"] == "apollo"


def settled_calls(live: LiveServer, provider: str) -> int:
    """The provider's call count once no call is still arriving (a hedged call cancelled
    on our side may reach the simulator a moment later, over a second on a loaded machine)."""
    seen = [live.calls(provider)]
    while len(seen) < 4 or len(set(seen[-4:])) > 1:
        time.sleep(0.5)
        seen.append(live.calls(provider))
    return seen[-1]


def test_an_open_breaker_is_skipped_without_a_call(live: LiveServer) -> None:
    live.control("apollo", error_rate=1.0, error_status=503)
    target = company(WORLD.clay_knows_company)
    for warmup in "abcdefgh":  # failures until the breaker opens (fewer retries fit when busy)
        answer = post(
            live,
            "search",
            {"domain": target.domain, "titles": [warmup], "limit": 3, "deadline_s": 2},
        ).json()
        if answer["attempts"][0]["outcome"] == "skipped_circuit_open":
            break
    sent = settled_calls(live, "apollo")
    titles = ["e", "o", "i"]
    for title in titles:
        response = post(live, "search", {"domain": target.domain, "titles": [title], "limit": 3})
        first = response.json()["attempts"][0]
        assert first == {**first, "provider": "apollo", "outcome": "skipped_circuit_open"}
        assert first["latency_ms"] == 0
    assert live.calls("apollo") == sent


def test_every_provider_failing_is_503_with_attempts_and_retry_after(live: LiveServer) -> None:
    for provider in ("apollo", "clay", "hunter"):
        live.control(provider, down=True)
    response = post(live, "search", {"domain": "domaur.com", "titles": ["VP"], "deadline_s": 3})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "service_unavailable"
    assert [a["provider"] for a in error["details"]["attempts"]] == ["apollo", "clay", "hunter"]
    assert all(a["outcome"] == "unavailable" for a in error["details"]["attempts"])


def test_the_deadline_holds_with_every_provider_hanging(live: LiveServer) -> None:
    for provider in ("apollo", "clay", "hunter"):
        live.control(provider, hang=True)
    started = time.monotonic()
    response = post(live, "search", {"domain": "domaur.com", "titles": ["VP"], "deadline_s": 2})
    # 2 s plus slack for a busy machine; ignoring the deadline would take 2 s per provider.
    assert time.monotonic() - started < 3.0
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"domain": "not a domain", "titles": ["VP"]}, "domain"),
        ({"domain": "https://localhost/team", "titles": ["VP"]}, "domain"),
        ({"domain": "acme.com", "titles": []}, "titles"),
        ({"domain": "acme.com", "titles": ["  "]}, "titles.0"),
        ({"domain": "acme.com", "titles": ["VP"], "limit": 0}, "limit"),
        ({"domain": "acme.com", "titles": ["VP"], "deadline_s": 11}, "deadline_s"),
        ({"domain": "acme.com", "titles": ["VP"], "deadline_s": 0.1}, "deadline_s"),
    ],
)
def test_bad_search_input_is_422_naming_the_field(
    live: LiveServer, body: dict[str, Any], field: str
) -> None:
    response = post(live, "search", body)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == field


def test_enrich_finds_the_email_with_source_and_confidence(live: LiveServer) -> None:
    person = next(
        p
        for c in WORLD.companies
        for p in c.people
        if not WORLD.apollo_has_email(p)
        and not WORLD.clay_has_email(p)
        and WORLD.hunter_view(WORLD.by_domain[p.company_domain], p.first_name, p.last_name).correct
        and WORLD.hunter_knows_pattern(WORLD.by_domain[p.company_domain])
        and not WORLD.hunter_lists(p)
    )
    response = post(
        live,
        "enrich",
        {
            "first_name": person.first_name,
            "last_name": person.last_name,
            "domain": person.company_domain,
        },
    )
    body = response.json()
    assert body.get("email") == person.email, body
    assert body["source"] == "hunter"
    assert body["confidence"] >= 70
    assert body["status"] == "likely"
    assert [a["provider"] for a in body["attempts"]] == ["apollo", "clay", "hunter"]
    verified = next(p for c in WORLD.companies for p in c.people if WORLD.apollo_has_email(p))
    quick = post(
        live,
        "enrich",
        {
            "first_name": verified.first_name,
            "last_name": verified.last_name,
            "domain": verified.company_domain,
        },
    ).json()
    assert quick["email"] == verified.email
    assert quick["source"] == "apollo"
    assert quick["status"] == "verified"
    assert len(quick["attempts"]) == 1, "stops at the first sufficient answer"


def test_enrich_of_nobody_is_not_found(live: LiveServer) -> None:
    body = post(
        live, "enrich", {"first_name": "Zed", "last_name": "Nobody", "domain": "nowhere-at-all.io"}
    ).json()
    assert body["email"] is None
    assert body["status"] == "not_found"


def test_search_needs_a_key(live: LiveServer) -> None:
    response = httpx.post(
        f"{live.url}/api/v1/contacts/search", json={"domain": "a.io", "titles": ["x"]}
    )
    assert response.status_code == 401


def test_integrations_and_metrics_report_providers_without_secrets(live: LiveServer) -> None:
    post(live, "search", {"domain": "domaur.com", "titles": ["VP"]})
    rows = {
        r["provider"]: r
        for r in httpx.get(f"{live.url}/api/v1/integrations", headers=live.auth).json()
    }
    assert rows["apollo"]["mode"] == "sandbox"
    assert rows["apollo"]["circuit"] == "closed"
    assert rows["apollo"]["calls_5m"] >= 1
    assert rows["apollo"]["p95_ms_5m"] is not None
    metrics = httpx.get(f"{live.url}/metrics").text
    assert (
        'roleferry_integration_calls_total{endpoint="/api/v1/mixed_people/api_search",error_type="",provider="apollo",status="success"}'
        in metrics
    )
    assert "roleferry_integration_latency_seconds_bucket" in metrics
    assert 'roleferry_circuit_state{provider="apollo"}' in metrics
    assert 'roleferry_rate_limit_remaining{provider="apollo"}' in metrics
    for secret in (
        "sandbox-apollo-key",
        "sandbox-hunter-key",
        "sandbox-clay-key",
        live.key,
        "domaur.com",
    ):
        assert secret not in metrics


def test_no_key_reaches_the_logs_while_searching(live: LiveServer) -> None:
    import io

    from roleferry.logging import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", "json", live.runtime.settings.secret_values(), stream=stream)
    try:
        live.control("hunter", error_rate=1.0, error_status=500)
        post(live, "search", {"domain": "domaur.com", "titles": ["VP"], "limit": 3})
        post(live, "enrich", {"first_name": "A", "last_name": "B", "domain": "domaur.com"})
    finally:
        configure_logging("WARNING", "console")
    out = stream.getvalue()
    assert "contacts/search" in out
    for secret in ("sandbox-apollo-key", "sandbox-hunter-key", "sandbox-clay-key", live.key):
        assert secret not in out
