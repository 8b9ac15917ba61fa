"""Clay simulator, per the contract chosen in contracts.md: filters-mode people search."""

from __future__ import annotations

from typing import Any

import httpx

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

KEY = {"clay-api-key": SANDBOX_API_KEYS["clay"]}


def search(
    sb: SandboxServer, body: dict[str, Any], headers: dict[str, str] = KEY
) -> httpx.Response:
    return httpx.post(f"{sb.base('clay')}/search/filters-mode", json=body, headers=headers)


def test_search_covers_companies_apollo_lacks_and_pages_forward(sb: SandboxServer) -> None:
    world = sb.sandbox.world
    company = max(
        (
            c
            for c in world.companies
            if world.clay_knows_company(c) and not world.apollo_knows_company(c)
        ),
        key=lambda c: c.size,
    )
    known = [p for p in company.people if world.clay_knows(p)]
    first = search(
        sb, {"source_type": "people", "filters": {"company_domains": [company.domain]}, "limit": 5}
    ).json()
    rows = list(first["data"])
    assert first["hasMore"] is True
    while True:
        page = httpx.get(f"{sb.base('clay')}/search/{first['searchId']}/next", headers=KEY)
        if page.status_code == 404:
            break
        rows += page.json()["data"]
    assert [r["full_name"] for r in rows] == [p.name for p in known]
    for row, person in zip(rows, known, strict=True):
        assert row["email"] in (person.email, None)
        assert (row["email"] is not None) == world.clay_has_email(person)


def test_filters_by_title_and_name(sb: SandboxServer) -> None:
    world = sb.sandbox.world
    person = next(p for c in world.companies for p in c.people if world.clay_has_email(p))
    body = {
        "source_type": "people",
        "limit": 50,
        "filters": {
            "company_domains": [person.company_domain],
            "first_name": person.first_name,
            "last_name": person.last_name,
        },
    }
    assert [r["email"] for r in search(sb, body).json()["data"]] == [person.email]
    titled = search(
        sb,
        {
            "source_type": "people",
            "filters": {"company_domains": [person.company_domain], "job_titles": [person.title]},
        },
    ).json()["data"]
    assert all(person.title.lower() in r["title"].lower() for r in titled)


def test_bearer_is_refused_and_bad_input_is_400(sb: SandboxServer) -> None:
    body = {"source_type": "people", "filters": {"company_domains": ["a.io"]}}
    assert (
        search(
            sb, body, headers={"Authorization": f"Bearer {SANDBOX_API_KEYS['clay']}"}
        ).status_code
        == 401
    )
    assert search(sb, {**body, "limit": 51}).status_code == 400
    assert (
        search(sb, {"source_type": "companies", "filters": {}}).json()["error"]["type"]
        == "validation_error"
    )
    assert search(sb, {"source_type": "people", "filters": {}}).status_code == 400
    assert httpx.get(f"{sb.base('clay')}/me", headers=KEY).status_code == 200


def test_rate_limit_is_429_with_retry_after(sb: SandboxServer) -> None:
    sb.control("clay", rate_limit={"limit": 1, "period_s": 3600})
    body = {"source_type": "people", "filters": {"company_domains": ["a.io"]}}
    assert search(sb, body).status_code == 200
    limited = search(sb, body)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
