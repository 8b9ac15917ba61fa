"""Apollo.io simulator: people search, people match (the design's "email finder"), company
search and enrich. Paths answer under both `/api/v1` (current) and `/v1` (legacy).

Auth is the `x-api-key` header; the legacy `api_key` in the JSON body (or query) is accepted
too; a Bearer key is refused as Apollo refuses a master key sent that way. Limits are one
fixed window per key across endpoints (default 100 per hour, the design's figure), reported
in Apollo's `x-rate-limit-*` / `x-*-requests-left` / `x-*-usage` headers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from roleferry.sandbox.common import ProviderHTTPError, json_object, json_response, sandbox_of
from roleferry.sandbox.world import Company, Person, World

DEFAULT_LIMIT, DEFAULT_PERIOD_S = 100, 3600.0
MAX_BULK = 10
HAS_DIRECT_PHONE = "Maybe: please request direct dial via people/bulk_match"


class ApolloError(ProviderHTTPError):
    provider = "apollo"


def render_error(status: int) -> tuple[dict[str, object], dict[str, str]]:
    messages = {
        401: "Invalid access credentials.",
        403: "This endpoint is only available to Apollo users on paid plans.",
        429: "The maximum number of api calls allowed is exceeded. Please try again later.",
        503: "Service temporarily unavailable",
    }
    return {"error": messages.get(status, "Internal server error")}, {}


def error_response(exc: ProviderHTTPError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.message}
    if exc.code:
        body["error_code"] = exc.code
    return json_response(body, exc.status, exc.headers)


_WINDOW_NAMES = {60.0: "minute", 3600.0: "hourly", 86400.0: "daily"}
_UNITS = {"minute": "minute", "hourly": "hour", "daily": "day"}


async def _authorize(request: Request, body: dict[str, Any], endpoint: str) -> dict[str, str]:
    """Checks the key and counts the call; returns the rate-limit headers for the response."""
    sandbox = sandbox_of(request)
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        raise ApolloError(401, "Invalid access credentials.")
    key = (
        request.headers.get("x-api-key")
        or body.get("api_key")
        or request.query_params.get("api_key")
    )
    if key != sandbox.api_keys["apollo"]:
        raise ApolloError(401, "Invalid access credentials.")
    window = sandbox.control["apollo"].window("requests", DEFAULT_LIMIT, DEFAULT_PERIOD_S)
    allowed, remaining, reset_in = window.hit(str(key))
    name = _WINDOW_NAMES.get(window.period_s)
    headers = {}
    if name:
        headers = {
            f"x-rate-limit-{name}": str(window.limit),
            f"x-{name}-requests-left": str(remaining),
            f"x-{name}-usage": str(window.limit - remaining),
        }
    if not allowed:
        headers["retry-after"] = str(max(1, round(reset_in)))
        per = _UNITS[name] if name else f"{window.period_s:g} seconds"
        raise ApolloError(
            429,
            f"The maximum number of api calls allowed for {endpoint} is {window.limit} times "
            f"per {per}. Please upgrade your plan from https://app.apollo.io/#/settings/plans/upgrade.",
            headers=headers,
        )
    return headers


def _params(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Apollo takes parameters in the JSON body or the query string; the body wins."""
    merged: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        name = key.removesuffix("[]")
        merged[name] = values if key.endswith("[]") or len(values) > 1 else values[0]
    merged.update(body)
    return merged


def _str_list(params: dict[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.replace("\n", ",").split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApolloError(422, f"{name} must be an array of strings", code="INVALID_PARAMETERS")


def _page(params: dict[str, Any]) -> tuple[int, int]:
    try:
        page = int(params.get("page", 1))
        per_page = int(params.get("per_page", 10))
    except (TypeError, ValueError) as exc:
        raise ApolloError(
            422, "page and per_page must be integers", code="INVALID_PARAMETERS"
        ) from exc
    if not 1 <= per_page <= 100:
        raise ApolloError(422, "per_page must be between 1 and 100", code="INVALID_PARAMETERS")
    if not 1 <= page <= 500:
        raise ApolloError(422, "page must be between 1 and 500", code="INVALID_PARAMETERS")
    return page, per_page


def _title_matches(title: str, wanted: list[str], similar: bool) -> bool:
    lowered = title.lower()
    for want in wanted:
        w = want.strip().lower()
        if w == lowered or (similar and w in lowered):
            return True
    return False


# Documented organization fields the world does not model: present and empty, as Apollo
# answers them for companies it knows little about (docs/sandbox.md).
_ORGANIZATION_UNKNOWN: dict[str, Any] = dict.fromkeys(
    (
        "blog_url",
        "angellist_url",
        "twitter_url",
        "facebook_url",
        "alexa_ranking",
        "phone",
        "linkedin_uid",
        "publicly_traded_symbol",
        "publicly_traded_exchange",
        "logo_url",
        "crunchbase_url",
        "sanitized_phone",
        "raw_address",
        "street_address",
        "state",
        "postal_code",
        "owned_by_organization_id",
        "seo_description",
        "short_description",
        "annual_revenue_printed",
        "annual_revenue",
        "total_funding",
        "total_funding_printed",
        "latest_funding_round_date",
        "latest_funding_stage",
    )
)
_PERSON_UNKNOWN: dict[str, Any] = dict.fromkeys(
    (
        "photo_url",
        "twitter_url",
        "github_url",
        "facebook_url",
        "extrapolated_email_confidence",
        "state",
        "city",
        "country",
        "intent_strength",
    )
)


def _organization(company: Company) -> dict[str, Any]:
    return {
        "id": company.id,
        "name": company.name,
        "website_url": f"http://www.{company.domain}",
        "primary_domain": company.domain,
        "linkedin_url": f"http://www.linkedin.com/company/{company.domain.split('.')[0]}",
        "industry": company.industry,
        "industries": [company.industry],
        "secondary_industries": [],
        "keywords": [],
        "languages": [],
        "estimated_num_employees": company.estimated_num_employees,
        "founded_year": 1990 + company.index % 34,
        "city": None,
        "country": "United States",
        "suborganizations": [],
        "num_suborganizations": 0,
        "retail_location_count": 0,
        "snippets_loaded": True,
        "funding_events": [],
        **_ORGANIZATION_UNKNOWN,
    }


def _person_full(world: World, person: Person) -> dict[str, Any]:
    company = world.by_domain[person.company_domain]
    has_email = world.apollo_has_email(person)
    job = f"{person.id[:12]}{company.id[-12:]}"
    return {
        "id": person.id,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "name": person.name,
        "title": person.title,
        "headline": f"{person.title} at {company.name}",
        "email": person.email if has_email else None,
        "email_status": "verified" if has_email else "unavailable",
        "linkedin_url": person.linkedin_url,
        "seniority": person.seniority,
        "departments": [person.department],
        "subdepartments": [],
        "functions": [],
        "personal_emails": [],
        "show_intent": False,
        "revealed_for_current_team": True,
        "employment_history": [
            {
                "_id": job,
                "id": job,
                "key": job,
                "current": True,
                "organization_id": company.id,
                "organization_name": company.name,
                "title": person.title,
                **dict.fromkeys(
                    (
                        "created_at",
                        "degree",
                        "description",
                        "emails",
                        "end_date",
                        "grade_level",
                        "kind",
                        "major",
                        "raw_address",
                        "start_date",
                        "updated_at",
                    )
                ),
            }
        ],
        "organization_id": company.id,
        "organization": _organization(company),
        **_PERSON_UNKNOWN,
    }


def _search(request: Request, params: dict[str, Any]) -> tuple[list[Person], int, int, int]:
    world = sandbox_of(request).world
    domains = (
        _str_list(params, "q_organization_domains_list")
        + _str_list(params, "q_organization_domains")
        + _str_list(params, "organization_domains")
    )
    org_ids = _str_list(params, "organization_ids")
    titles = _str_list(params, "person_titles")
    seniorities = {s.lower() for s in _str_list(params, "person_seniorities")}
    similar = params.get("include_similar_titles", True) not in (False, "false")
    page, per_page = _page(params)
    companies = [c for d in domains if (c := world.company(d)) is not None]
    companies += [world.company_by_id[i] for i in org_ids if i in world.company_by_id]
    found = [
        p
        for c in companies
        if world.apollo_knows_company(c)
        for p in c.people
        if world.apollo_knows(p)
        and (not titles or _title_matches(p.title, titles, similar))
        and (not seniorities or p.seniority in seniorities)
    ]
    start = (page - 1) * per_page
    return found[start : start + per_page], len(found), page, per_page


def _pagination(total: int, page: int, per_page: int) -> dict[str, int]:
    return {
        "page": page,
        "per_page": per_page,
        "total_entries": total,
        "total_pages": -(-total // per_page),
    }


def _match_one(world: World, details: dict[str, Any]) -> Person | None:
    person: Person | None = None
    if isinstance(details.get("id"), str):
        person = world.person(details["id"])
    elif isinstance(details.get("email"), str):
        person = world.person_by_email(details["email"])
    else:
        first, last = details.get("first_name"), details.get("last_name")
        if (not first or not last) and isinstance(details.get("name"), str):
            first, _, last = details["name"].strip().partition(" ")
        domain = details.get("domain")
        if not domain and isinstance(details.get("organization_name"), str):
            wanted = details["organization_name"].strip().lower()
            domain = next((c.domain for c in world.companies if c.name.lower() == wanted), None)
        if isinstance(details.get("linkedin_url"), str) and not (first and domain):
            person = world.person_by_linkedin(details["linkedin_url"])
        elif isinstance(first, str) and isinstance(last, str) and isinstance(domain, str):
            person = world.find_person(domain, first, last)
    if person is None or not world.apollo_knows(person):
        return None
    return person


def router() -> APIRouter:
    api = APIRouter(prefix="/apollo")

    for prefix in ("/api/v1", "/v1"):

        @api.post(f"{prefix}/mixed_people/api_search")
        async def people_api_search(request: Request) -> JSONResponse:
            body = await json_object(request, ApolloError)
            headers = await _authorize(request, body, "api/v1/mixed_people/api_search")
            people, total, page, per_page = _search(request, _params(request, body))
            world = sandbox_of(request).world
            return json_response(
                {
                    "total_entries": total,
                    "pagination": _pagination(total, page, per_page),
                    "people": [
                        {
                            "id": p.id,
                            "first_name": p.first_name,
                            "last_name_obfuscated": f"{p.last_name[:2]}***{p.last_name[-1]}",
                            "title": p.title,
                            "last_refreshed_at": "2026-10-01T00:00:00.000+00:00",
                            "has_email": world.apollo_has_email(p),
                            "has_city": True,
                            "has_state": True,
                            "has_country": True,
                            "has_direct_phone": HAS_DIRECT_PHONE,
                            "organization": {
                                "name": world.by_domain[p.company_domain].name,
                                "has_industry": True,
                                "has_phone": False,
                                "has_city": False,
                                "has_state": False,
                                "has_country": True,
                                "has_zip_code": False,
                                "has_revenue": False,
                                "has_employee_count": True,
                            },
                        }
                        for p in people
                    ],
                },
                headers=headers,
            )

        @api.post(f"{prefix}/mixed_people/search")
        async def people_search(request: Request) -> JSONResponse:
            """The legacy search: full names, but the email is a locked placeholder."""
            body = await json_object(request, ApolloError)
            headers = await _authorize(request, body, "api/v1/mixed_people/search")
            people, total, page, per_page = _search(request, _params(request, body))
            world = sandbox_of(request).world
            rows = []
            for p in people:
                row = _person_full(world, p)
                if row["email"]:
                    row["email"] = f"email_not_unlocked@{p.company_domain}"
                rows.append(row)
            return json_response(
                {
                    "breadcrumbs": [],
                    "partial_results_only": False,
                    "disable_eu_prospecting": False,
                    "partial_results_limit": 10_000,
                    "contacts": [],
                    "people": rows,
                    "pagination": _pagination(total, page, per_page),
                },
                headers=headers,
            )

        @api.post(f"{prefix}/people/match")
        async def people_match(request: Request) -> JSONResponse:
            body = await json_object(request, ApolloError)
            headers = await _authorize(request, body, "api/v1/people/match")
            params = _params(request, body)
            if params.get("reveal_phone_number") in (True, "true") and not params.get(
                "webhook_url"
            ):
                raise ApolloError(
                    400, "webhook_url is required when reveal_phone_number is true", headers=headers
                )
            world = sandbox_of(request).world
            person = _match_one(world, params)
            return json_response(
                {"person": _person_full(world, person) if person else None}, headers=headers
            )

        @api.post(f"{prefix}/people/bulk_match")
        async def people_bulk_match(request: Request) -> JSONResponse:
            body = await json_object(request, ApolloError)
            headers = await _authorize(request, body, "api/v1/people/bulk_match")
            details = body.get("details")
            if not isinstance(details, list) or not details:
                raise ApolloError(
                    422,
                    "details must be a non-empty array",
                    code="INVALID_PARAMETERS",
                    headers=headers,
                )
            if len(details) > MAX_BULK:
                raise ApolloError(
                    422,
                    f"details can contain at most {MAX_BULK} people per request",
                    code="INVALID_PARAMETERS",
                    headers=headers,
                )
            world = sandbox_of(request).world
            matches = [_match_one(world, d) if isinstance(d, dict) else None for d in details]
            found = [m for m in matches if m is not None]
            return json_response(
                {
                    "status": "success",
                    "error_code": None,
                    "error_message": None,
                    "total_requested_enrichments": len(details),
                    "unique_enriched_records": len({m.id for m in found}),
                    "missing_records": len(details) - len(found),
                    "credits_consumed": sum(1 for m in found if world.apollo_has_email(m)),
                    "matches": [_person_full(world, m) if m else None for m in matches],
                },
                headers=headers,
            )

        @api.post(f"{prefix}/mixed_companies/search")
        async def companies_search(request: Request) -> JSONResponse:
            body = await json_object(request, ApolloError)
            headers = await _authorize(request, body, "api/v1/mixed_companies/search")
            params = _params(request, body)
            world = sandbox_of(request).world
            name = str(params.get("q_organization_name") or "").strip().lower()
            domains = {d.lower() for d in _str_list(params, "q_organization_domains_list")}
            ids = set(_str_list(params, "organization_ids"))
            page, per_page = _page(params)
            found = [
                c
                for c in world.companies
                if world.apollo_knows_company(c)
                and (not name or name in c.name.lower())
                and (not domains or c.domain in domains)
                and (not ids or c.id in ids)
            ]
            start = (page - 1) * per_page
            return json_response(
                {
                    "breadcrumbs": [],
                    "partial_results_only": False,
                    "disable_eu_prospecting": False,
                    "partial_results_limit": 10_000,
                    "accounts": [],
                    "organizations": [_organization(c) for c in found[start : start + per_page]],
                    "model_ids": [],
                    "num_fetch_result": None,
                    "derived_params": None,
                    "pagination": _pagination(len(found), page, per_page),
                },
                headers=headers,
            )

        @api.get(f"{prefix}/organizations/enrich")
        async def organization_enrich(request: Request, domain: str = "") -> JSONResponse:
            headers = await _authorize(request, {}, "api/v1/organizations/enrich")
            if not domain.strip():
                raise ApolloError(
                    422, "domain is required", code="INVALID_PARAMETERS", headers=headers
                )
            world = sandbox_of(request).world
            company = world.company(domain)
            known = company is not None and world.apollo_knows_company(company)
            return json_response(
                {"organization": _organization(company) if known and company else None},
                headers=headers,
            )

        @api.get(f"{prefix}/auth/health")
        async def auth_health(request: Request) -> JSONResponse:
            key = request.headers.get("x-api-key") or request.query_params.get("api_key")
            return json_response({"is_logged_in": key == sandbox_of(request).api_keys["apollo"]})

    return api
