"""Contact search and enrichment for a user: the cache first, then the waterfall."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.errors import ServiceUnavailable
from roleferry.providers.models import PersonQuery
from roleferry.resilience.deadline import Deadline
from roleferry.search import cache
from roleferry.search.models import (
    AttemptOut,
    EnrichRequest,
    EnrichResponse,
    SearchRequest,
    SearchResponse,
)
from roleferry.search.waterfall import Outcome, Waterfall


def _attempts(outcome: Outcome) -> list[AttemptOut]:
    return [AttemptOut(**asdict(a)) for a in outcome.attempts]


def _unavailable(outcome: Outcome, retry_after: int, what: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"every provider failed to {what}; try again in {retry_after}s",
        details={"attempts": [a.model_dump() for a in _attempts(outcome)]},
        headers={"Retry-After": str(retry_after)},
    )


async def search(
    session: AsyncSession, waterfall: Waterfall, user_id: str, request: SearchRequest, ttl_s: int
) -> SearchResponse:
    titles = sorted({t.lower() for t in request.titles})
    key = cache.cache_key({"domain": request.domain, "titles": titles, "limit": request.limit})
    hit = await cache.get(session, user_id, "search", key)
    if hit is not None:
        return SearchResponse.model_validate({**hit, "cached": True})
    # No transaction stays open across provider calls: on SQLite a read snapshot held for
    # seconds makes the later write fail if anyone else wrote meanwhile.
    await session.commit()
    outcome, errors = await waterfall.search(
        request.domain, request.titles, request.limit, deadline=Deadline(request.deadline_s)
    )
    if outcome.all_failed:
        raise _unavailable(outcome, outcome.retry_after_s(errors), f"search {request.domain}")
    response = SearchResponse(
        domain=request.domain,
        contacts=outcome.contacts,
        provider=outcome.provider,
        attempts=_attempts(outcome),
    )
    await cache.put(session, user_id, "search", key, response.model_dump(mode="json"), ttl_s)
    return response


async def enrich(
    session: AsyncSession, waterfall: Waterfall, user_id: str, request: EnrichRequest, ttl_s: int
) -> EnrichResponse:
    query = PersonQuery(
        first_name=request.first_name, last_name=request.last_name, domain=request.domain
    )
    key = cache.cache_key(query.model_dump(mode="json", exclude_none=True))
    hit = await cache.get(session, user_id, "enrich", key)
    if hit is not None:
        return EnrichResponse.model_validate({**hit, "cached": True})
    await session.commit()
    outcome, errors = await waterfall.enrich(query, deadline=Deadline(request.deadline_s))
    if outcome.all_failed:
        raise _unavailable(outcome, outcome.retry_after_s(errors), "find this email")
    contact = outcome.contacts[0] if outcome.contacts else None
    email = contact.email if contact else None
    response = EnrichResponse(
        email=email,
        status=(contact.email_status or "not_found") if contact and email else "not_found",
        source=contact.sources.get("email") if contact and email else None,
        confidence=contact.email_confidence if contact and email else None,
        contact=contact,
        attempts=_attempts(outcome),
    )
    await cache.put(session, user_id, "enrich", key, response.model_dump(mode="json"), ttl_s)
    return response
