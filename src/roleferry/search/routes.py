"""Synchronous contact search and single-person enrichment."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.errors import ServiceUnavailable
from roleferry.payments.credits import metered
from roleferry.search import service
from roleferry.search.models import EnrichRequest, EnrichResponse, SearchRequest, SearchResponse
from roleferry.waterfall.engine import Waterfall

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])


async def get_waterfall(runtime: RuntimeDep) -> Waterfall:
    providers = runtime.providers
    if providers is None:
        raise ServiceUnavailable("providers are not started")
    return Waterfall.of(providers, runtime.settings)


WaterfallDep = Annotated[Waterfall, Depends(get_waterfall)]
_ERRORS = {
    402: {"description": "Not enough credits for the emails this could find (`error.details`)."},
    503: {"description": "Every provider failed; the attempts are in `error.details`."},
}


@router.post("/search", responses=_ERRORS)  # type: ignore[arg-type]
async def search_contacts(
    body: SearchRequest,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    waterfall: WaterfallDep,
) -> SearchResponse:
    """People with these titles at a company, with work emails, within the deadline. Each
    email found by the providers costs `email_found` credits (cached answers are free)."""
    settings = runtime.settings
    reference = f"search:{uuid.uuid4().hex}"
    async with metered(
        runtime.db, settings, user.id, "email_found", body.limit, reference
    ) as meter:
        response = await service.search(
            session,
            waterfall,
            user.id,
            body,
            settings.search_cache_ttl_s,
            settings.search_deadline_s,
        )
        if not response.cached:
            meter.used = sum(
                1 for c in response.contacts if c.email and c.email_status != "guessed"
            )
    return response


@router.post("/enrich", responses=_ERRORS)  # type: ignore[arg-type]
async def enrich_contact(
    body: EnrichRequest,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    waterfall: WaterfallDep,
) -> EnrichResponse:
    """One named person's work email, with its source and confidence; a found email costs
    `email_found` credits (cached answers are free)."""
    settings = runtime.settings
    reference = f"enrich:{uuid.uuid4().hex}"
    async with metered(runtime.db, settings, user.id, "email_found", 1, reference) as meter:
        response = await service.enrich(
            session,
            waterfall,
            user.id,
            body,
            settings.search_cache_ttl_s,
            settings.search_deadline_s,
        )
        if not response.cached and response.status in ("verified", "likely"):
            meter.used = 1
    return response
