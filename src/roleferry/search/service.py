"""Contact search and enrichment for a user: the cache first, then the waterfall, with a batch
of one at interactive priority. Only complete answers are cached: one given while a provider
was skipped or failed is marked `degraded` and asked again next time."""

from __future__ import annotations

import math
from dataclasses import asdict

from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.errors import ServiceUnavailable
from roleferry.providers.models import PersonQuery
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.ratelimit import Priority, owner
from roleferry.search import cache
from roleferry.search.models import (
    AttemptOut,
    EnrichRequest,
    EnrichResponse,
    SearchRequest,
    SearchResponse,
)
from roleferry.waterfall.decisions import Attempt, Found, NotFound, RetryAt
from roleferry.waterfall.engine import PeopleQuery, Waterfall


def _attempts(attempts: list[Attempt]) -> list[AttemptOut]:
    return [AttemptOut(**asdict(a)) for a in attempts]


def _unavailable(decision: RetryAt, now: float, what: str) -> ServiceUnavailable:
    """503 with the true wait: until the earliest provider that could help frees."""
    retry_after = max(1, math.ceil(decision.at - now))
    return ServiceUnavailable(
        f"no provider could {what}; try again in {retry_after}s ({decision.reason})",
        details={"attempts": [a.model_dump() for a in _attempts(decision.attempts)]},
        headers={"Retry-After": str(retry_after)},
    )


async def search(
    session: AsyncSession,
    waterfall: Waterfall,
    user_id: str,
    request: SearchRequest,
    ttl_s: int,
    deadline_s: float,
) -> SearchResponse:
    titles = sorted({t.lower() for t in request.titles})
    key = cache.cache_key({"domain": request.domain, "titles": titles, "limit": request.limit})
    if not request.refresh:
        hit = await cache.get(session, user_id, "search", key)
        if hit is not None:
            return SearchResponse.model_validate({**hit, "cached": True})
    # No transaction stays open across provider calls: on SQLite a read snapshot held for
    # seconds makes the later write fail if anyone else wrote meanwhile.
    await session.commit()
    with owner(user_id):
        (decision,) = await waterfall.search(
            [PeopleQuery(request.domain, request.titles, request.limit)],
            priority=Priority.INTERACTIVE,
            deadline=Deadline(request.deadline_s or deadline_s),
        )
    if isinstance(decision, RetryAt):
        raise _unavailable(decision, waterfall.clock(), f"search {request.domain}")
    response = SearchResponse(
        domain=request.domain,
        contacts=decision.contacts,
        provider=decision.provider,
        attempts=_attempts(decision.attempts),
        degraded=decision.degraded,
    )
    if not decision.degraded:
        await cache.put(session, user_id, "search", key, response.model_dump(mode="json"), ttl_s)
    return response


async def enrich(
    session: AsyncSession,
    waterfall: Waterfall,
    user_id: str,
    request: EnrichRequest,
    ttl_s: int,
    deadline_s: float,
) -> EnrichResponse:
    query = PersonQuery(
        first_name=request.first_name, last_name=request.last_name, domain=request.domain
    )
    key = enrich_cache_key(query)
    if not request.refresh:
        hit = await cache.get(session, user_id, "enrich", key)
        if hit is not None:
            return EnrichResponse.model_validate({**hit, "cached": True})
    await session.commit()
    with owner(user_id):
        (decision,) = await waterfall.enrich(
            [query],
            priority=Priority.INTERACTIVE,
            deadline=Deadline(request.deadline_s or deadline_s),
        )
    if isinstance(decision, RetryAt):
        raise _unavailable(decision, waterfall.clock(), "find this email")
    response = enrich_response(decision)
    if not decision.degraded:
        await cache.put(session, user_id, "enrich", key, response.model_dump(mode="json"), ttl_s)
    return response


def enrich_cache_key(query: PersonQuery) -> str:
    """One person's cache key, the same for search's enrich and bulk enrichment."""
    return cache.cache_key(
        {
            "first_name": query.first_name.strip().lower(),
            "last_name": query.last_name.strip().lower(),
            "domain": query.domain,
        }
    )


def enrich_response(decision: Found | NotFound) -> EnrichResponse:
    """A person's answer as the API (and the cache, for both paths) shows it."""
    contact = decision.contact if isinstance(decision, Found) else decision.guess
    email = contact.email if contact else None
    return EnrichResponse(
        email=email,
        status=(contact.email_status or "not_found") if contact and email else "not_found",
        source=contact.sources.get("email") if contact and email else None,
        confidence=contact.email_confidence if contact and email else None,
        contact=contact,
        attempts=_attempts(decision.attempts),
        degraded=decision.degraded,
    )
