"""Hunter client: domain search to find people, email finder for one person. Its status quirks
(403 = rate limit, 429 = monthly quota) are in its spec; this module is payloads only."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from roleferry.providers.errors import BadResponse
from roleferry.providers.http import ProviderHTTP
from roleferry.providers.hunter.models import (
    DomainEmail,
    DomainSearchResponse,
    FinderData,
    FinderResponse,
    VerifierResponse,
)
from roleferry.providers.models import Contact, EmailStatus, PersonQuery, real_email, sourced
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

NAME = "hunter"
DOMAIN_SEARCH = "/v2/domain-search"
EMAIL_FINDER = "/v2/email-finder"
EMAIL_VERIFIER = "/v2/email-verifier"
LIKELY = 70


class HunterClient:
    name = NAME
    batch_size = 1

    def __init__(self, http: ProviderHTTP, policy: Policy) -> None:
        self.http = http
        self.policy = policy

    async def _get(
        self,
        path: str,
        params: dict[str, Any],
        model: type[BaseModel],
        deadline: Deadline,
        priority: Priority,
    ) -> Any:
        async def attempt(timeout: float) -> Any:
            response = await self.http.request("GET", path, params=params, timeout=timeout)
            body = self.http.json_object(response, path)
            try:
                return model.model_validate(body)
            except ValidationError as exc:
                raise BadResponse(NAME, f"{path} answered an unexpected shape") from exc

        return await self.policy.call(path, attempt, deadline=deadline, priority=priority)

    async def search_people(
        self, domain: str, titles: list[str], limit: int, *, deadline: Deadline, priority: Priority
    ) -> list[Contact]:
        found: DomainSearchResponse = await self._get(
            DOMAIN_SEARCH,
            {"domain": domain, "limit": 100, "type": "personal"},
            DomainSearchResponse,
            deadline,
            priority,
        )
        wanted = [t.lower() for t in titles]
        matching = [
            e
            for e in found.data.emails
            if not wanted or any(t in (e.position or "").lower() for t in wanted)
        ]
        return [_from_domain(e, domain, found.data.organization) for e in matching[:limit]]

    async def find_emails(
        self, people: list[PersonQuery], *, deadline: Deadline, priority: Priority
    ) -> list[Contact | None]:
        results: list[Contact | None] = []
        for query in people:
            found: FinderResponse = await self._get(
                EMAIL_FINDER,
                {
                    "domain": query.domain,
                    "first_name": query.first_name,
                    "last_name": query.last_name,
                },
                FinderResponse,
                deadline,
                priority,
            )
            results.append(
                _from_finder(found.data, query) if real_email(found.data.email) else None
            )
        return results

    async def verify_email(self, email: str, *, deadline: Deadline, priority: Priority) -> str:
        """Hunter's verdict on a mailbox: valid, invalid, accept_all, webmail, disposable or
        unknown."""
        found: VerifierResponse = await self._get(
            EMAIL_VERIFIER, {"email": email}, VerifierResponse, deadline, priority
        )
        return found.data.status


def _status(confidence: int | None) -> EmailStatus:
    return "likely" if (confidence or 0) >= LIKELY else "guessed"


def _finder_status(data: FinderData) -> EmailStatus:
    """`verified` when Hunter found the address published (`sources`) or verified the
    mailbox; otherwise it applied the domain's pattern, as sure as its score."""
    if data.sources or (data.verification and data.verification.status == "valid"):
        return "verified"
    return _status(data.score)


def _from_domain(email: DomainEmail, domain: str, organization: str | None) -> Contact:
    return sourced(
        Contact(
            first_name=email.first_name,
            last_name=email.last_name,
            title=email.position,
            seniority=email.seniority,
            department=email.department,
            linkedin_url=email.linkedin,
            email=real_email(email.value),
            email_status=_status(email.confidence),
            email_confidence=email.confidence,
            company_domain=domain,
            company_name=organization,
        ),
        NAME,
    )


def _from_finder(data: FinderData, query: PersonQuery) -> Contact:
    return sourced(
        Contact(
            first_name=data.first_name or query.first_name,
            last_name=data.last_name or query.last_name,
            title=data.position,
            linkedin_url=data.linkedin_url,
            email=real_email(data.email),
            email_status=_finder_status(data),
            email_confidence=data.score,
            company_domain=query.domain,
            company_name=data.company,
        ),
        NAME,
    )
