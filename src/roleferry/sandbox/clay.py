"""Clay simulator: the Public API's people search (see docs/sandbox.md for the routes chosen).

Clay has no documented synchronous "find people" REST call; its 2026 Public API
(`https://api.clay.com/public/v0`, key in `clay-api-key`, Bearer refused) searches Clay's
database in "filters mode" and pages with a forward-only server-side iterator. The exact
routes and filter names are unconfirmed; ours are:

- `GET /me` → the key's identity (Clay's smoke test).
- `POST /search/filters-mode` `{"source_type": "people", "filters": {"company_domains": [...],
  "job_titles": [...], "first_name"?, "last_name"?}, "limit": 1-50}` →
  `{"searchId", "data": [person...], "hasMore"}`.
- `GET /search/{searchId}/next` → the next page; an exhausted or unknown search is a 404.

People carry `email` (Clay's waterfall result, or null) and `email_source`. Limits: 10 requests
per second per key (429 with Retry-After); at most 50 results per request (the free tier's).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from roleferry.sandbox.common import ProviderHTTPError, json_object, json_response, sandbox_of
from roleferry.sandbox.world import Person, World

PER_SECOND = 10
MAX_LIMIT = 50


class ClayError(ProviderHTTPError):
    provider = "clay"


# Error types as Clay's Public API names them (validation_error, rate_limited, quota_exceeded).
_TYPES = {400: "validation_error", 401: "unauthorized", 404: "not_found", 429: "rate_limited"}


def render_error(status: int) -> tuple[dict[str, object], dict[str, str]]:
    return {
        "error": {"type": _TYPES.get(status, "internal_error"), "message": "Something went wrong"}
    }, {}


def error_response(exc: ProviderHTTPError) -> JSONResponse:
    error: dict[str, Any] = {
        "type": exc.code or _TYPES.get(exc.status, "internal_error"),
        "message": exc.message,
    }
    if exc.status == 429 and "retry-after" in exc.headers:
        error["details"] = {"retryAfter": int(exc.headers["retry-after"])}
    return json_response({"error": error}, exc.status, exc.headers)


def _authorize(request: Request) -> None:
    sandbox = sandbox_of(request)
    key = request.headers.get("clay-api-key")
    if not key or key != sandbox.api_keys["clay"]:
        raise ClayError(401, "Invalid or missing clay-api-key header")
    allowed, _, reset_in = sandbox.control["clay"].window("second", PER_SECOND, 1.0).hit(key)
    if not allowed:
        raise ClayError(
            429, "Rate limit exceeded", headers={"retry-after": str(max(1, round(reset_in)))}
        )


def _person(world: World, person: Person) -> dict[str, Any]:
    company = world.by_domain[person.company_domain]
    has_email = world.clay_has_email(person)
    return {
        "id": f"clay_{person.id}",
        "full_name": person.name,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "title": person.title,
        "linkedin_url": person.linkedin_url,
        "email": person.email if has_email else None,
        "email_source": "waterfall" if has_email else None,
        "company_domain": company.domain,
        "company_name": company.name,
    }


def _strings(filters: dict[str, Any], name: str) -> list[str]:
    value = filters.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClayError(400, f"filters.{name} must be a list of strings")
    return [v.strip().lower() for v in value if v.strip()]


def router() -> APIRouter:
    api = APIRouter(prefix="/clay")

    @api.get("/me")
    async def me(request: Request) -> JSONResponse:
        _authorize(request)
        return json_response(
            {"id": "usr_sandbox", "email": "sandbox@roleferry.localhost", "workspace": "Sandbox"}
        )

    @api.post("/search/filters-mode")
    async def search(request: Request) -> JSONResponse:
        _authorize(request)
        body = await json_object(request, ClayError)
        if body.get("source_type") != "people":
            raise ClayError(400, "source_type must be 'people'")
        filters = body.get("filters")
        if not isinstance(filters, dict):
            raise ClayError(400, "filters must be an object")
        limit = body.get("limit", 25)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ClayError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
        domains = _strings(filters, "company_domains")
        if not domains:
            raise ClayError(400, "filters.company_domains is required")
        titles = _strings(filters, "job_titles")
        first = str(filters.get("first_name") or "").strip().lower()
        last = str(filters.get("last_name") or "").strip().lower()
        sandbox = sandbox_of(request)
        world = sandbox.world
        found = [
            p
            for d in domains
            if (c := world.company(d)) is not None and world.clay_knows_company(c)
            for p in c.people
            if world.clay_knows(p)
            and (not titles or any(t in p.title.lower() for t in titles))
            and (not first or p.first_name.lower() == first)
            and (not last or p.last_name.lower() == last)
        ]
        search_id = "srch_" + secrets.token_hex(8)
        rows = [_person(world, p) for p in found]
        sandbox.clay_searches[search_id] = (rows[limit:], limit)
        return json_response(
            {"searchId": search_id, "data": rows[:limit], "hasMore": len(rows) > limit}
        )

    @api.get("/search/{search_id}/next")
    async def next_page(request: Request, search_id: str) -> JSONResponse:
        _authorize(request)
        sandbox = sandbox_of(request)
        state = sandbox.clay_searches.get(search_id)
        if state is None or not state[0]:
            sandbox.clay_searches.pop(search_id, None)
            raise ClayError(404, f"search {search_id} is unknown or exhausted")
        rows, limit = state
        sandbox.clay_searches[search_id] = (rows[limit:], limit)
        return json_response(
            {"searchId": search_id, "data": rows[:limit], "hasMore": len(rows) > limit}
        )

    return api
