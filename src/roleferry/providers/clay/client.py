"""Clay client: the Public API's people search (`clay-api-key` header), used both to find
people at a domain and, filtered by name, to find one person's email."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from roleferry.providers.clay.models import ClayPerson, SearchPage
from roleferry.providers.errors import BadResponse
from roleferry.providers.http import ProviderHTTP
from roleferry.providers.models import Contact, PersonQuery, name_key, real_email, sourced
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

NAME = "clay"
SEARCH = "/search/filters-mode"
MAX_LIMIT = 50


class ClayClient:
    name = NAME
    batch_size = 1

    def __init__(self, http: ProviderHTTP, policy: Policy) -> None:
        self.http = http
        self.policy = policy

    async def _search(
        self, filters: dict[str, Any], limit: int, deadline: Deadline, priority: Priority
    ) -> list[ClayPerson]:
        body = {"source_type": "people", "filters": filters, "limit": min(MAX_LIMIT, max(1, limit))}

        async def attempt(timeout: float) -> list[ClayPerson]:
            response = await self.http.request("POST", SEARCH, json=body, timeout=timeout)
            page = self.http.json_object(response, SEARCH)
            try:
                return SearchPage.model_validate(page).data
            except ValidationError as exc:
                raise BadResponse(NAME, f"{SEARCH} answered an unexpected shape") from exc

        return await self.policy.call(SEARCH, attempt, deadline=deadline, priority=priority)

    async def search_people(
        self, domain: str, titles: list[str], limit: int, *, deadline: Deadline, priority: Priority
    ) -> list[Contact]:
        people = await self._search(
            {"company_domains": [domain], "job_titles": titles}, limit, deadline, priority
        )
        return [_to_contact(p, domain) for p in people]

    async def find_emails(
        self, people: list[PersonQuery], *, deadline: Deadline, priority: Priority
    ) -> list[Contact | None]:
        results: list[Contact | None] = []
        for query in people:
            found = await self._search(
                {
                    "company_domains": [query.domain],
                    "first_name": query.first_name,
                    "last_name": query.last_name,
                },
                5,
                deadline,
                priority,
            )
            wanted = name_key(query.first_name, query.last_name)
            match = next(
                (
                    p
                    for p in found
                    if name_key(p.first_name, p.last_name) == wanted and real_email(p.email)
                ),
                None,
            )
            results.append(_to_contact(match, query.domain) if match else None)
        return results


def _to_contact(person: ClayPerson, domain: str) -> Contact:
    email = real_email(person.email)
    first, last = person.first_name, person.last_name
    if (not first or not last) and person.full_name:
        first, _, last = person.full_name.partition(" ")
    return sourced(
        Contact(
            first_name=first,
            last_name=last,
            full_name=person.full_name,
            title=person.title,
            linkedin_url=person.linkedin_url,
            email=email,
            email_status="verified" if email else None,
            company_domain=person.company_domain or domain,
            company_name=person.company_name,
            provider_ids={NAME: person.id} if person.id else {},
        ),
        NAME,
    )
