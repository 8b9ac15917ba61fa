"""Hunter simulator: three ways to pass the key, pattern-based answers, and Hunter's inverted
403 (rate limit) / 429 (quota) quirk."""

from __future__ import annotations

import httpx
import pytest

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

KEY = SANDBOX_API_KEYS["hunter"]


def get(sb: SandboxServer, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"{sb.base('hunter')}/v2/{path}", params={"api_key": KEY, **params})


@pytest.mark.parametrize(
    ("params", "headers"),
    [({"api_key": KEY}, {}), ({}, {"X-API-KEY": KEY}), ({}, {"Authorization": f"Bearer {KEY}"})],
)
def test_key_in_query_header_or_bearer(
    sb: SandboxServer, params: dict[str, str], headers: dict[str, str]
) -> None:
    domain = sb.sandbox.world.companies[0].domain
    response = httpx.get(
        f"{sb.base('hunter')}/v2/domain-search",
        params={"domain": domain, **params},
        headers=headers,
    )
    assert response.status_code == 200
    assert set(response.json()) == {"data", "meta"}


def test_wrong_or_missing_key_is_401_with_errors(sb: SandboxServer) -> None:
    response = httpx.get(
        f"{sb.base('hunter')}/v2/domain-search", params={"domain": "a.io", "api_key": "nope"}
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["id"] == "authentication_failed"
    assert (
        httpx.get(f"{sb.base('hunter')}/v2/domain-search", params={"domain": "a.io"}).status_code
        == 401
    )


def test_email_finder_applies_the_known_pattern_or_guesses(sb: SandboxServer) -> None:
    world = sb.sandbox.world
    known = next(c for c in world.companies if world.hunter_knows_pattern(c))
    person = known.people[0]
    found = get(
        sb,
        "email-finder",
        domain=known.domain,
        first_name=person.first_name,
        last_name=person.last_name,
    ).json()["data"]
    assert found["email"] == person.email
    assert found["score"] >= 70
    unknown = next(
        c
        for c in world.companies
        if not world.hunter_knows_pattern(c) and c.email_pattern != "{first}.{last}"
    )
    other = unknown.people[0]
    guess = get(sb, "email-finder", domain=unknown.domain, full_name=other.name).json()["data"]
    assert guess["email"] != other.email
    assert guess["score"] < 70
    assert get(sb, "email-finder", domain=known.domain).status_code == 400


def test_domain_search_lists_found_addresses_with_confidence(sb: SandboxServer) -> None:
    world = sb.sandbox.world
    company = next(c for c in world.companies if world.hunter_knows_pattern(c))
    body = get(sb, "domain-search", domain=company.domain, limit=100).json()
    listed = [p for p in company.people if world.hunter_lists(p)]
    assert body["meta"]["results"] == len(listed)
    assert {e["value"] for e in body["data"]["emails"]} == {p.email for p in listed}
    assert body["data"]["pattern"] == company.email_pattern
    assert "api_key" not in body["meta"]["params"]
    assert get(sb, "domain-search").json()["errors"][0]["id"] == "wrong_params"
    assert get(sb, "domain-search", domain=company.domain, limit=101).status_code == 400


def test_email_verifier_knows_bounces(sb: SandboxServer) -> None:
    world = sb.sandbox.world
    person = next(p for c in world.companies for p in c.people if not p.bounces)
    gone = next(p for c in world.companies for p in c.people if p.bounces)
    assert get(sb, "email-verifier", email=person.email).json()["data"]["status"] == "valid"
    assert get(sb, "email-verifier", email=gone.email).json()["data"]["status"] == "invalid"
    assert get(sb, "email-verifier", email="nope").status_code == 400


def test_rate_limit_is_403_and_quota_is_429(sb: SandboxServer) -> None:
    domain = sb.sandbox.world.companies[0].domain
    sb.control("hunter", rate_limit={"limit": 2, "period_s": 3600})
    assert [get(sb, "domain-search", domain=domain).status_code for _ in range(3)] == [
        200,
        200,
        403,
    ]
    limited = get(sb, "domain-search", domain=domain)
    assert limited.json()["errors"][0]["code"] == 403
    assert int(limited.headers["retry-after"]) >= 1
    sb.control("hunter", rate_limit=None, quota=sb.sandbox.hunter_used + 1)
    person = sb.sandbox.world.companies[0].people[0]
    assert get(sb, "email-finder", domain=domain, full_name=person.name).status_code == 200
    spent = get(sb, "email-finder", domain=domain, full_name=person.name)
    assert spent.status_code == 429
    assert "billing period" in spent.json()["errors"][0]["details"]
