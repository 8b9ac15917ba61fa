"""Apollo simulator: search without emails, match with them, limits in Apollo's headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.sandbox.world import Company
from tests.support.sandbox_server import SandboxServer

KEY = {"x-api-key": SANDBOX_API_KEYS["apollo"]}


def post(
    sb: SandboxServer, path: str, body: dict[str, Any], headers: dict[str, str] = KEY
) -> httpx.Response:
    return httpx.post(f"{sb.base('apollo')}{path}", json=body, headers=headers)


def known_company(sb: SandboxServer) -> Company:
    world = sb.sandbox.world
    return next(c for c in world.companies if world.apollo_knows_company(c))


def test_api_search_finds_known_people_by_title_without_emails(sb: SandboxServer) -> None:
    company = known_company(sb)
    world = sb.sandbox.world
    response = post(
        sb,
        "/api/v1/mixed_people/api_search",
        {
            "q_organization_domains_list": [company.domain],
            "person_titles": ["engineer"],
            "per_page": 100,
        },
    )
    assert response.status_code == 200
    body = response.json()
    expected = [
        p for p in company.people if world.apollo_knows(p) and "engineer" in p.title.lower()
    ]
    assert body["total_entries"] == len(expected)
    assert [p["id"] for p in body["people"]] == [p.id for p in expected]
    assert all("email" not in p and "last_name" not in p for p in body["people"])


def test_legacy_search_takes_the_key_in_the_body_and_locks_emails(sb: SandboxServer) -> None:
    company = known_company(sb)
    response = post(
        sb,
        "/v1/mixed_people/search",
        {
            "api_key": SANDBOX_API_KEYS["apollo"],
            "q_organization_domains": company.domain,
            "per_page": 100,
        },
        headers={},
    )
    assert response.status_code == 200
    emails = {p["email"] for p in response.json()["people"]}
    assert emails <= {None, f"email_not_unlocked@{company.domain}"}
    assert response.json()["pagination"]["total_entries"] == len(response.json()["people"])


def test_match_reveals_the_email_apollo_has(sb: SandboxServer) -> None:
    world = sb.sandbox.world
    person = next(p for c in world.companies for p in c.people if world.apollo_has_email(p))
    by_name = post(
        sb,
        "/api/v1/people/match",
        {
            "first_name": person.first_name,
            "last_name": person.last_name,
            "domain": person.company_domain,
        },
    )
    assert by_name.json()["person"]["email"] == person.email
    assert by_name.json()["person"]["email_status"] == "verified"
    by_id = post(sb, "/api/v1/people/match", {"id": person.id})
    assert by_id.json()["person"]["id"] == person.id
    by_linkedin = post(sb, "/api/v1/people/match", {"linkedin_url": person.linkedin_url})
    assert by_linkedin.json()["person"]["id"] == person.id
    locked = next(
        p
        for c in world.companies
        for p in c.people
        if world.apollo_knows(p) and not world.apollo_has_email(p)
    )
    assert post(sb, "/api/v1/people/match", {"id": locked.id}).json()["person"]["email"] is None
    assert post(
        sb, "/api/v1/people/match", {"first_name": "No", "last_name": "Body", "domain": "x.io"}
    ).json() == {"person": None}


def test_bulk_match_takes_at_most_ten(sb: SandboxServer) -> None:
    company = known_company(sb)
    details = [
        {"first_name": p.first_name, "last_name": p.last_name, "domain": company.domain}
        for p in company.people[:9]
    ]
    details.append({"first_name": "Nobody", "last_name": "Here", "domain": company.domain})
    body = post(sb, "/api/v1/people/bulk_match", {"details": details}).json()
    assert body["total_requested_enrichments"] == 10
    assert len(body["matches"]) == 10
    assert body["matches"][-1] is None
    assert body["missing_records"] == 10 - sum(m is not None for m in body["matches"])
    too_many = post(sb, "/api/v1/people/bulk_match", {"details": details + details[:1]})
    assert too_many.status_code == 422


def test_companies_search_and_enrich(sb: SandboxServer) -> None:
    company = known_company(sb)
    found = post(sb, "/api/v1/mixed_companies/search", {"q_organization_name": company.name}).json()
    assert company.domain in [o["primary_domain"] for o in found["organizations"]]
    enriched = httpx.get(
        f"{sb.base('apollo')}/api/v1/organizations/enrich",
        params={"domain": company.domain},
        headers=KEY,
    )
    assert enriched.json()["organization"]["name"] == company.name


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong"}, {"Authorization": f"Bearer {SANDBOX_API_KEYS['apollo']}"}],
)
def test_bad_credentials_are_apollos_401(sb: SandboxServer, headers: dict[str, str]) -> None:
    response = post(sb, "/api/v1/people/match", {"id": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid access credentials."}


def test_fixed_window_limit_reports_and_enforces(sb: SandboxServer) -> None:
    first = post(sb, "/api/v1/people/match", {"id": "x"})
    assert first.headers["x-rate-limit-hourly"] == "100"
    assert first.headers["x-hourly-requests-left"] == "99"
    sb.control("apollo", rate_limit={"limit": 3, "period_s": 60})
    lefts = [
        post(sb, "/api/v1/people/match", {"id": "x"}).headers["x-minute-requests-left"]
        for _ in range(3)
    ]
    assert lefts == ["2", "1", "0"]
    limited = post(sb, "/api/v1/people/match", {"id": "x"})
    assert limited.status_code == 429
    assert "maximum number of api calls" in limited.json()["error"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    sb.control("apollo", rate_limit={"limit": 3, "period_s": 10})
    odd = post(sb, "/api/v1/people/match", {"id": "x"})
    assert not [
        h for h in odd.headers if (h.startswith("x-") and "rate" in h) or "requests-left" in h
    ]
    assert sb.stats()["providers"]["apollo"]["/api/v1/people/match"] == {"200": 5, "429": 1}


def test_invalid_parameters_are_422(sb: SandboxServer) -> None:
    assert post(sb, "/api/v1/mixed_people/api_search", {"per_page": 101}).status_code == 422
    assert (
        post(
            sb,
            "/api/v1/mixed_people/api_search",
            {"person_titles": "x", "q_organization_domains_list": 5},
        ).status_code
        == 422
    )
    bad_json = httpx.post(
        f"{sb.base('apollo')}/api/v1/people/match",
        content=b"{nope",
        headers={**KEY, "content-type": "application/json"},
    )
    assert bad_json.status_code == 400
