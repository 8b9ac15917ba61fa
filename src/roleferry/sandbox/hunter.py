"""Hunter.io v2 simulator: domain search, email finder, email verifier, account.

Hunter's quirks kept: the key comes as `api_key` query, `X-API-KEY` or Bearer; 403 means the
per-second/minute rate limit (retry after a pause), 429 means the monthly quota is spent
(do not retry this cycle). Success is `{"data", "meta"}`, failure `{"errors": [...]}`.
Quota is charged as Hunter charges: domain search 1 per 10 emails returned, finder 1 per
email found, verifier 1 per email; nothing when nothing is found.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from roleferry.sandbox.common import ProviderHTTPError, json_response, sandbox_of
from roleferry.sandbox.world import Company, World

PER_SECOND, PER_MINUTE = 15, 500
DEFAULT_MONTHLY_QUOTA = 25_000


class HunterError(ProviderHTTPError):
    provider = "hunter"


_IDS = {
    400: "wrong_params",
    401: "authentication_failed",
    403: "too_many_requests",
    404: "not_found",
    429: "too_many_requests",
    451: "claimed_email",
}


def _errors(status: int, details: str, error_id: str | None = None) -> dict[str, object]:
    return {
        "errors": [
            {"id": error_id or _IDS.get(status, "server_error"), "code": status, "details": details}
        ]
    }


def render_error(status: int) -> tuple[dict[str, object], dict[str, str]]:
    return _errors(status, "Something went wrong on our side. Please try again later."), {}


def error_response(exc: ProviderHTTPError) -> JSONResponse:
    return json_response(_errors(exc.status, exc.message, exc.code), exc.status, exc.headers)


def _authorize(request: Request) -> str:
    sandbox = sandbox_of(request)
    auth = request.headers.get("authorization", "")
    key = (
        request.query_params.get("api_key")
        or request.headers.get("x-api-key")
        or (auth[7:] if auth.lower().startswith("bearer ") else None)
    )
    if not key:
        raise HunterError(401, "You are missing the api_key parameter", code="no_user")
    if key != sandbox.api_keys["hunter"]:
        raise HunterError(
            401, "No user found for the API key supplied", code="authentication_failed"
        )
    control = sandbox.control["hunter"]
    for name, limit, period in (("second", PER_SECOND, 1.0), ("minute", PER_MINUTE, 60.0)):
        allowed, _, reset_in = control.window(name, limit, period).hit(key)
        if not allowed:
            raise HunterError(
                403,
                "You have reached the rate limit. Please slow down your requests.",
                code="too_many_requests",
                headers={"retry-after": str(max(1, round(reset_in)))},
            )
    if _quota_left(request) <= 0:
        raise HunterError(
            429,
            "You've reached the limit for the number of searches per billing period included "
            "in your plan.",
            code="too_many_requests",
        )
    return key


def _quota_left(request: Request) -> int:
    sandbox = sandbox_of(request)
    quota = sandbox.control["hunter"].faults.quota
    total = DEFAULT_MONTHLY_QUOTA if quota is None else quota
    return total - sandbox.hunter_used


def _charge(request: Request, requests: int) -> None:
    sandbox_of(request).hunter_used += requests


def _company(world: World, domain: str | None, company: str | None) -> Company | None:
    if domain:
        return world.company(domain)
    if company:
        wanted = company.strip().lower()
        return next((c for c in world.companies if c.name.lower() == wanted), None)
    return None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HunterError(400, f"The {name} parameter must be an integer") from exc
    if not low <= value <= high:
        raise HunterError(400, f"The {name} parameter must be between {low} and {high}")
    return value


def router() -> APIRouter:
    api = APIRouter(prefix="/hunter/v2")

    @api.get("/domain-search")
    async def domain_search(request: Request) -> JSONResponse:
        _authorize(request)
        q = request.query_params
        if not q.get("domain") and not q.get("company"):
            raise HunterError(400, "You are missing the domain or company parameter")
        limit = _int_param(request, "limit", 10, 1, 100)
        offset = _int_param(request, "offset", 0, 0, 10_000)
        world = sandbox_of(request).world
        company = _company(world, q.get("domain"), q.get("company"))
        seniority = {s for s in (q.get("seniority") or "").split(",") if s}
        department = {d for d in (q.get("department") or "").split(",") if d}
        people = []
        if company is not None and world.hunter_knows_pattern(company):
            people = [
                p
                for p in company.people
                if world.hunter_lists(p)
                and (not seniority or _hunter_seniority(p.seniority) in seniority)
                and (not department or _hunter_department(p.department) in department)
            ]
        if q.get("type") == "generic":
            people = []
        page = people[offset : offset + limit]
        emails = []
        for p in page:
            view = world.hunter_view(company, p.first_name, p.last_name) if company else None
            emails.append(
                {
                    "value": view.email if view else p.email,
                    "type": "personal",
                    "confidence": view.confidence if view else 0,
                    "first_name": p.first_name,
                    "last_name": p.last_name,
                    "position": p.title,
                    "seniority": _hunter_seniority(p.seniority),
                    "department": _hunter_department(p.department),
                    "linkedin": p.linkedin_url,
                    "twitter": None,
                    "phone_number": None,
                    "verification": {"date": "2026-10-01", "status": "valid"},
                    "sources": [],
                }
            )
        if emails:
            _charge(request, -(-len(emails) // 10))
        known = company is not None and world.hunter_knows_pattern(company)
        pattern = company.email_pattern if company is not None and known else None
        return json_response(
            {
                "data": {
                    "domain": company.domain if company else q.get("domain"),
                    "disposable": False,
                    "webmail": False,
                    "accept_all": False,
                    "pattern": pattern,
                    "organization": company.name if company else None,
                    "emails": emails,
                },
                "meta": {
                    "results": len(people),
                    "limit": limit,
                    "offset": offset,
                    "params": {k: v for k, v in q.items() if k != "api_key"},
                },
            }
        )

    @api.get("/email-finder")
    async def email_finder(request: Request) -> JSONResponse:
        _authorize(request)
        q = request.query_params
        if not q.get("domain") and not q.get("company"):
            raise HunterError(400, "You are missing the domain or company parameter")
        first, last = q.get("first_name"), q.get("last_name")
        if (not first or not last) and q.get("full_name"):
            first, _, last = q["full_name"].strip().partition(" ")
        if not first or not last:
            raise HunterError(
                400, "You are missing the first_name and last_name (or full_name) parameters"
            )
        world = sandbox_of(request).world
        company = _company(world, q.get("domain"), q.get("company"))
        data: dict[str, Any] = {
            "first_name": first,
            "last_name": last,
            "email": None,
            "score": None,
            "domain": company.domain if company else q.get("domain"),
            "accept_all": False,
            "position": None,
            "company": company.name if company else None,
            "twitter": None,
            "linkedin_url": None,
            "phone_number": None,
            "verification": {"date": None, "status": None},
            "sources": [],
        }
        if company is not None:
            view = world.hunter_view(company, first, last)
            person = world.find_person(company.domain, first, last)
            # Published on the web: Hunter knows the person, cites where, and has verified
            # the mailbox. Otherwise the address is the domain's pattern applied to the name,
            # with a score and no verification: a made-up name gets one too.
            listed = person is not None and world.hunter_lists(person) and view.correct
            data.update(
                email=view.email,
                score=view.confidence,
                position=person.title if person and listed else None,
                verification={"date": "2026-10-01", "status": "valid"}
                if listed
                else {"date": None, "status": None},
                sources=[
                    {
                        "domain": company.domain,
                        "uri": f"https://{company.domain}/team",
                        "extracted_on": "2026-09-14",
                        "last_seen_on": "2026-10-01",
                        "still_on_page": True,
                    }
                ]
                if listed
                else [],
            )
            _charge(request, 1)
        return json_response(
            {"data": data, "meta": {"params": {k: v for k, v in q.items() if k != "api_key"}}}
        )

    @api.get("/email-verifier")
    async def email_verifier(request: Request) -> JSONResponse:
        _authorize(request)
        email = (request.query_params.get("email") or "").strip().lower()
        if not email:
            raise HunterError(400, "You are missing the email parameter")
        if "@" not in email or "." not in email.rsplit("@", 1)[-1]:
            raise HunterError(400, "The email parameter is not a valid email address")
        world = sandbox_of(request).world
        company = world.company(email.rsplit("@", 1)[1])
        person = world.person_by_email(email)
        if company is None:
            status, result, score = "unknown", "risky", 40
        elif person is None or person.bounces:
            status, result, score = "invalid", "undeliverable", 5
        else:
            status, result, score = "valid", "deliverable", 95
        _charge(request, 1)
        return json_response(
            {
                "data": {
                    "status": status,
                    "result": result,
                    "score": score,
                    "email": email,
                    "regexp": True,
                    "gibberish": False,
                    "disposable": False,
                    "webmail": False,
                    "mx_records": company is not None,
                    "smtp_server": company is not None,
                    "smtp_check": status == "valid",
                    "accept_all": False,
                    "block": False,
                    "sources": [],
                },
                "meta": {"params": {"email": email}},
            }
        )

    @api.get("/account")
    async def account(request: Request) -> JSONResponse:
        _authorize(request)
        sandbox = sandbox_of(request)
        quota = sandbox.control["hunter"].faults.quota
        return json_response(
            {
                "data": {
                    "first_name": "Sandbox",
                    "last_name": "User",
                    "email": "sandbox@roleferry.localhost",
                    "plan_name": "Sandbox",
                    "plan_level": 1,
                    "reset_date": "2026-12-01",
                    "team_id": 1,
                    "requests": {
                        "searches": {
                            "used": sandbox.hunter_used,
                            "available": DEFAULT_MONTHLY_QUOTA if quota is None else quota,
                        }
                    },
                }
            }
        )

    return api


def _hunter_seniority(seniority: str) -> str:
    return {
        "c_suite": "executive",
        "vp": "executive",
        "head": "executive",
        "director": "senior",
        "manager": "senior",
        "senior": "senior",
    }.get(seniority, "junior")


def _hunter_department(department: str) -> str:
    return {
        "engineering_technical": "it",
        "product_management": "management",
        "human_resources": "hr",
        "data_science": "it",
        "design": "design",
        "sales": "sales",
        "marketing": "marketing",
        "executive": "executive",
        "support": "support",
        "operations": "operations",
    }.get(department, "management")
