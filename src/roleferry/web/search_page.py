"""The Search page: `POST /api/v1/contacts/search` and `/enrich` with a loading indicator."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.errors import ApiError
from roleferry.search import routes as search_api
from roleferry.search.models import EnrichRequest, SearchRequest
from roleferry.web.render import fragment, invalid, page
from roleferry.web.session import Console, CsrfConsole

router = APIRouter(include_in_schema=False)


@router.get("/search", response_class=HTMLResponse)
async def search_page(request: Request, console: Console, session: SessionDep) -> Response:
    return await page(request, console, "search.html", {}, session=session)


@router.post("/search", response_class=HTMLResponse)
async def search(
    request: Request,
    console: CsrfConsole,
    session: SessionDep,
    runtime: RuntimeDep,
    domain: Annotated[str, Form()] = "",
    titles: Annotated[str, Form()] = "",
    refresh: Annotated[str, Form()] = "",
) -> Response:
    body: dict[str, Any] = {
        "domain": domain,
        "titles": [t.strip() for t in titles.split(",") if t.strip()],
    }
    if refresh:
        body["refresh"] = True
    try:
        query = SearchRequest.model_validate(body)
        waterfall = await search_api.get_waterfall(runtime)
        result = await search_api.search_contacts(query, console.user, session, runtime, waterfall)
    except ValidationError as exc:
        return fragment(request, "_error.html", {"problem": invalid(exc), "retry": False}, 422)
    except ApiError as exc:
        attempts = (exc.details or {}).get("attempts", []) if isinstance(exc.details, dict) else []
        return fragment(
            request,
            "_search_results.html",
            {"problem": exc.message, "attempts": attempts, "result": None},
            exc.status_code,
        )
    return fragment(
        request,
        "_search_results.html",
        {"result": result, "attempts": [a.model_dump() for a in result.attempts]},
    )


@router.post("/search/enrich", response_class=HTMLResponse)
async def enrich(
    request: Request,
    console: CsrfConsole,
    session: SessionDep,
    runtime: RuntimeDep,
    first_name: Annotated[str, Form()] = "",
    last_name: Annotated[str, Form()] = "",
    domain: Annotated[str, Form()] = "",
) -> Response:
    """One person's email, as `POST /api/v1/contacts/enrich` finds it."""
    try:
        query = EnrichRequest.model_validate(
            {"first_name": first_name, "last_name": last_name, "domain": domain}
        )
        waterfall = await search_api.get_waterfall(runtime)
        found = await search_api.enrich_contact(query, console.user, session, runtime, waterfall)
    except ValidationError as exc:
        return fragment(request, "_enriched.html", {"problem": invalid(exc)}, 422)
    except ApiError as exc:
        return fragment(request, "_enriched.html", {"problem": exc.message}, exc.status_code)
    return fragment(request, "_enriched.html", {"found": found})
