"""Apollo, Hunter and Clay publish no machine-readable description, so their simulators are
checked against fixtures written from the documented example responses
(tests/contracts/<vendor>/, each naming its source): every route, success and error, answers
only documented fields, each of the documented JSON type, with the documented envelope."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.contracts.documented import check, fixture
from tests.support.sandbox_server import SandboxServer

Call = Callable[[SandboxServer], httpx.Response]
API = "/api/v1"


def _apollo(path: str, body: dict[str, Any] | None = None, key: str = "") -> Call:
    def call(sb: SandboxServer) -> httpx.Response:
        headers = {"x-api-key": key or SANDBOX_API_KEYS["apollo"]}
        if body is None:
            return httpx.get(f"{sb.base('apollo')}{path}", headers=headers)
        return httpx.post(f"{sb.base('apollo')}{path}", json=body, headers=headers)

    return call


def _hunter(path: str, key: str = "", **params: str) -> Call:
    def call(sb: SandboxServer) -> httpx.Response:
        params.setdefault("api_key", key or SANDBOX_API_KEYS["hunter"])
        return httpx.get(f"{sb.base('hunter')}{path}", params=params)

    return call


def _clay(path: str, body: dict[str, Any] | None = None, key: str = "") -> Call:
    def call(sb: SandboxServer) -> httpx.Response:
        headers = {"clay-api-key": key or SANDBOX_API_KEYS["clay"]}
        if body is None:
            return httpx.get(f"{sb.base('clay')}{path}", headers=headers)
        return httpx.post(f"{sb.base('clay')}{path}", json=body, headers=headers)

    return call


def _known(sb: SandboxServer) -> tuple[str, str, str, str, str]:
    """A company Apollo, Hunter and Clay all know, and one of its people Apollo knows:
    domain, company name, person id, first and last name."""
    world = sb.sandbox.world
    for company in world.companies:
        if not (
            world.apollo_knows_company(company)
            and world.clay_knows_company(company)
            and world.hunter_knows_pattern(company)
        ):
            continue
        for person in company.people:
            if world.apollo_has_email(person) and world.clay_knows(person):
                return company.domain, company.name, person.id, person.first_name, person.last_name
    raise AssertionError("no company known to every provider")


def _routes(sb: SandboxServer) -> list[tuple[str, str, int, Call]]:
    """(vendor, fixture, status, call) for every simulated route, its success and at least one
    of its errors (Clay's next page and the rate limits: test_paging_and_limits…)."""
    domain, name, person_id, first, last = _known(sb)
    search = {"q_organization_domains_list": [domain], "per_page": 5}
    clay_search = {"source_type": "people", "filters": {"company_domains": [domain]}, "limit": 1}
    return [
        (
            "apollo",
            "mixed_people_api_search",
            200,
            _apollo(f"{API}/mixed_people/api_search", search),
        ),
        ("apollo", "mixed_people_search", 200, _apollo("/v1/mixed_people/search", search)),
        ("apollo", "people_match", 200, _apollo("/api/v1/people/match", {"id": person_id})),
        (
            "apollo",
            "people_bulk_match",
            200,
            _apollo(
                "/api/v1/people/bulk_match",
                {"details": [{"id": person_id}, {"email": "nobody@nowhere.example"}]},
            ),
        ),
        (
            "apollo",
            "mixed_companies_search",
            200,
            _apollo("/api/v1/mixed_companies/search", {"q_organization_name": name}),
        ),
        (
            "apollo",
            "organizations_enrich",
            200,
            _apollo(f"{API}/organizations/enrich?domain={domain}"),
        ),
        ("apollo", "auth_health", 200, _apollo("/v1/auth/health")),
        ("apollo", "error", 401, _apollo("/api/v1/people/match", {"id": person_id}, key="wrong")),
        ("apollo", "error", 422, _apollo("/api/v1/mixed_people/api_search", {"per_page": 500})),
        ("apollo", "error", 422, _apollo("/v1/mixed_people/search", {"page": 501})),
        (
            "apollo",
            "error",
            400,
            _apollo("/api/v1/people/match", {"id": person_id, "reveal_phone_number": True}),
        ),
        (
            "apollo",
            "error",
            422,
            _apollo("/api/v1/people/bulk_match", {"details": [{"id": person_id}] * 11}),
        ),
        ("apollo", "error", 422, _apollo("/api/v1/mixed_companies/search", {"per_page": 0})),
        ("apollo", "error", 422, _apollo(f"{API}/organizations/enrich?domain=")),
        # A wrong key is no error here: Apollo answers 200 `{"is_logged_in": false}`.
        ("apollo", "auth_health", 200, _apollo("/v1/auth/health", key="wrong")),
        ("hunter", "domain_search", 200, _hunter("/v2/domain-search", domain=domain)),
        (
            "hunter",
            "email_finder",
            200,
            _hunter("/v2/email-finder", domain=domain, first_name=first, last_name=last),
        ),
        ("hunter", "email_verifier", 200, _hunter("/v2/email-verifier", email=f"{first}@{domain}")),
        ("hunter", "account", 200, _hunter("/v2/account")),
        ("hunter", "error", 400, _hunter("/v2/domain-search")),
        ("hunter", "error", 400, _hunter("/v2/email-finder", first_name=first, last_name=last)),
        ("hunter", "error", 400, _hunter("/v2/email-verifier", email="not-an-address")),
        ("hunter", "error", 401, _hunter("/v2/account", key="wrong")),
        ("clay", "me", 200, _clay("/me")),
        ("clay", "search_create", 200, _clay("/search/filters-mode", clay_search)),
        ("clay", "error", 400, _clay("/search/filters-mode", {"source_type": "companies"})),
        ("clay", "error", 401, _clay("/me", key="wrong")),
        ("clay", "error", 404, _clay("/search/srch_unknown/next")),
    ]


def test_every_route_answers_documented_fields_and_types(sb: SandboxServer) -> None:
    """Each route's answer, success and error, has only documented fields, each of its
    documented type, and every top-level field of the documented envelope."""
    failures: dict[str, list[str]] = {}
    for vendor, name, status, call in _routes(sb):
        response = call(sb)
        label = f"{vendor} {name} {status}"
        assert response.status_code == status, (label, response.text)
        shape = fixture(vendor, name)["response"]
        result = check(response.json(), shape)
        nested = any("[]" in p or p.count(".") > 1 for p in result.present)
        assert nested or name in ("auth_health", "me", "error"), f"{label}: nothing nested checked"
        top = [p for p in result.missing() if p.count(".") == 1 and vendor != "clay"]
        if name == "error":
            top = []
        if result.errors or top:
            failures[label] = sorted(set(result.errors)) + [f"{p}: missing" for p in top]
    assert not failures, json.dumps(failures, indent=1)


def test_paging_and_limits_answer_documented_shapes(sb: SandboxServer) -> None:
    """Clay's next page, and each vendor's rate-limit or quota error, are documented shapes."""
    domain = _known(sb)[0]
    created = _clay(
        "/search/filters-mode",
        {"source_type": "people", "filters": {"company_domains": [domain]}, "limit": 1},
    )(sb).json()
    page = _clay(f"/search/{created['searchId']}/next")(sb)
    assert page.status_code == 200
    assert check(page.json(), fixture("clay", "search_next")["response"]).errors == []
    sb.control("apollo", rate_limit="1/60")
    sb.control("hunter", rate_limit="1/60", quota=0)
    sb.control("clay", rate_limit="1/60")
    limited = {
        "apollo": (_apollo("/api/v1/organizations/enrich?domain=" + domain), 429),
        "hunter": (_hunter("/v2/account"), 403),
        "clay": (_clay("/me"), 429),
    }
    for vendor, (call, status) in limited.items():
        call(sb)
        response = call(sb)
        assert response.status_code == status, (vendor, response.text)
        assert check(response.json(), fixture(vendor, "error")["response"]).errors == [], vendor
    quota = _hunter("/v2/domain-search", domain=domain)
    sb.control("hunter", rate_limit="100/1")
    exhausted = quota(sb)
    assert exhausted.status_code == 429
    assert check(exhausted.json(), fixture("hunter", "error")["response"]).errors == []
    assert "retryAfter" in _clay("/me")(sb).json()["error"]["details"]


def test_checker_reports_unknown_fields_and_wrong_types() -> None:
    """The fixture check catches a field the docs do not name and a value of the wrong type."""
    shape = {"data": {"email": "string", "score": "integer", "sources": [{"uri": "string"}]}}
    result = check({"data": {"email": 3, "score": 90, "sources": [{"url": "x"}], "x": 1}}, shape)
    assert sorted(result.errors) == [
        "$.data.email: int is not string",
        "$.data.sources[].url: not a documented field",
        "$.data.x: not a documented field",
    ]
    assert result.missing() == ["$.data.sources[].uri"]
