"""Synchronous contact search and single-person enrichment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.errors import ServiceUnavailable
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
_ERRORS = {503: {"description": "Every provider failed; the attempts are in `error.details`."}}


@router.post("/search", responses=_ERRORS)  # type: ignore[arg-type]
async def search_contacts(
    body: SearchRequest,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    waterfall: WaterfallDep,
) -> SearchResponse:
    """People with these titles at a company, with work emails, within the deadline."""
    settings = runtime.settings
    return await service.search(
        session, waterfall, user.id, body, settings.search_cache_ttl_s, settings.search_deadline_s
    )


@router.post("/enrich", responses=_ERRORS)  # type: ignore[arg-type]
async def enrich_contact(
    body: EnrichRequest,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    waterfall: WaterfallDep,
) -> EnrichResponse:
    """One named person's work email, with its source and confidence."""
    settings = runtime.settings
    return await service.enrich(
        session, waterfall, user.id, body, settings.search_cache_ttl_s, settings.search_deadline_s
    )
