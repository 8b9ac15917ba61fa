"""Search and enrichment requests and answers, as the API shows them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

from roleferry.providers.models import Contact

_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def check_domain(value: str) -> str:
    domain = value.strip().lower().removeprefix("www.")
    if not _DOMAIN.match(domain):
        raise ValueError("must be a bare domain like acme.com (no scheme, path or spaces)")
    return domain


class SearchRequest(BaseModel):
    domain: str = Field(examples=["acme.com"])
    titles: list[Title] = Field(min_length=1, max_length=20, examples=[["VP", "Head"]])
    limit: int = Field(10, ge=1, le=50)
    deadline_s: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Answer within this many seconds; default ROLEFERRY_SEARCH_DEADLINE_S.",
    )
    refresh: bool = Field(False, description="Ask the providers even if a cached answer exists.")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return check_domain(value)


class EnrichRequest(BaseModel):
    first_name: Name
    last_name: Name
    domain: str = Field(examples=["acme.com"])
    deadline_s: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Answer within this many seconds; default ROLEFERRY_SEARCH_DEADLINE_S.",
    )
    refresh: bool = Field(False, description="Ask the providers even if a cached answer exists.")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return check_domain(value)


class AttemptOut(BaseModel):
    provider: str
    outcome: str = Field(
        description="ok, empty, an error kind, skipped_<reason>, or cancelled_hedge."
    )
    latency_ms: float
    found: int
    detail: str | None


class SearchResponse(BaseModel):
    domain: str
    contacts: list[Contact]
    provider: str | None = Field(description="The first provider that found people.")
    attempts: list[AttemptOut]
    cached: bool = False
    degraded: bool = Field(
        False,
        description="A provider was skipped or failed, so the answer may be incomplete; "
        "not cached.",
    )


class EnrichResponse(BaseModel):
    email: str | None
    status: str = Field(description="verified, likely, guessed, or not_found.")
    source: str | None = Field(description="The provider the email came from.")
    confidence: int | None
    contact: Contact | None
    attempts: list[AttemptOut]
    cached: bool = False
    degraded: bool = Field(
        False,
        description="A provider was skipped or failed, so the answer may be incomplete; "
        "not cached.",
    )
