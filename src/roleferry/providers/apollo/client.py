"""Apollo.io client: people search, then people/bulk_match to reveal emails (Apollo has no
`/email_finder`: enrichment by match is it). The key goes in the `x-api-key` header, never in
the body, so it cannot reach a log through a payload."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from roleferry.providers.apollo.models import BulkMatchResponse, Person, SearchResponse
from roleferry.providers.errors import BadResponse
from roleferry.providers.http import ProviderHTTP
from roleferry.providers.models import Contact, PersonQuery, real_email, sourced
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

NAME = "apollo"
SEARCH = "/api/v1/mixed_people/api_search"
BULK_MATCH = "/api/v1/people/bulk_match"
M = TypeVar("M", bound=BaseModel)


class ApolloClient:
    name = NAME
    batch_size = 10

    def __init__(self, http: ProviderHTTP, policy: Policy) -> None:
        self.http = http
        self.policy = policy

    async def _post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        response = await self.http.request("POST", path, json=body, timeout=timeout)
        await self._observe_budget(response)
        return self.http.json_object(response, path)

    async def _observe_budget(self, response: httpx.Response) -> None:
        """Apollo states what is left in each of its windows: our count follows it."""
        for limit, left, period in self.http.spec.limits.read(response.headers):
            await self.policy.limiter.observe_remaining(limit, left, period)

    async def search_people(
        self, domain: str, titles: list[str], limit: int, *, deadline: Deadline, priority: Priority
    ) -> list[Contact]:
        """api_search finds who (free, no emails); bulk_match reveals their emails."""
        body = {
            "q_organization_domains_list": [domain],
            "person_titles": titles,
            "per_page": min(100, max(1, limit)),
        }

        async def search(timeout: float) -> SearchResponse:
            return _parse(SearchResponse, await self._post(SEARCH, body, timeout), SEARCH)

        found = await self.policy.call(SEARCH, search, deadline=deadline, priority=priority)
        ids = [p.id for p in found.people[:limit]]
        contacts: list[Contact] = []
        for start in range(0, len(ids), self.batch_size):
            matches = await self._bulk_match(
                [{"id": i} for i in ids[start : start + self.batch_size]], deadline, priority
            )
            contacts += [_to_contact(m, domain) for m in matches if m is not None]
        return contacts

    async def find_emails(
        self, people: list[PersonQuery], *, deadline: Deadline, priority: Priority
    ) -> list[Contact | None]:
        results: list[Contact | None] = []
        for start in range(0, len(people), self.batch_size):
            chunk = people[start : start + self.batch_size]
            details = [
                {"first_name": p.first_name, "last_name": p.last_name, "domain": p.domain}
                | ({"linkedin_url": p.linkedin_url} if p.linkedin_url else {})
                for p in chunk
            ]
            matches = await self._bulk_match(details, deadline, priority)
            results += [
                _to_contact(m, q.domain) if m is not None and real_email(m.email) else None
                for m, q in zip(matches, chunk, strict=True)
            ]
        return results

    async def _bulk_match(
        self, details: list[dict[str, Any]], deadline: Deadline, priority: Priority
    ) -> list[Person | None]:
        body = {"details": details, "reveal_personal_emails": False}

        async def match(timeout: float) -> list[Person | None]:
            parsed = _parse(
                BulkMatchResponse, await self._post(BULK_MATCH, body, timeout), BULK_MATCH
            )
            if len(parsed.matches) != len(details):
                raise BadResponse(
                    NAME, f"{BULK_MATCH} answered {len(parsed.matches)} of {len(details)}"
                )
            return parsed.matches

        return await self.policy.call(BULK_MATCH, match, deadline=deadline, priority=priority)


def _parse(model: type[M], body: dict[str, Any], path: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadResponse(NAME, f"{path} answered an unexpected shape") from exc


def _to_contact(person: Person, domain: str) -> Contact:
    email = real_email(person.email)
    organization = person.organization
    return sourced(
        Contact(
            first_name=person.first_name,
            last_name=person.last_name,
            full_name=person.name,
            title=person.title,
            seniority=person.seniority,
            department=person.departments[0] if person.departments else None,
            linkedin_url=person.linkedin_url,
            email=email,
            email_status="verified"
            if email and person.email_status == "verified"
            else ("likely" if email else None),
            company_domain=(organization.primary_domain if organization else None) or domain,
            company_name=organization.name if organization else None,
            provider_ids={NAME: person.id},
        ),
        NAME,
    )
