"""Search and enrichment requests and answers, as the API shows them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StringConstraints

from roleferry.api.inputs import NOT_BLANK, Domain
from roleferry.providers.models import Contact
from roleferry.waterfall.engine import MIN_PROVIDER_S

# Not blank: the pattern says so in the schema too, where minLength alone would admit "  ".
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NOT_BLANK)
]
Title = Text
Name = Text

# The shortest deadline in which a provider can be tried at all (the last provider of the
# waterfall gets what is left, and needs MIN_PROVIDER_S of it): a shorter one can only fail.
MIN_DEADLINE_S = round(MIN_PROVIDER_S + 0.05, 2)
DeadlineSeconds = Annotated[
    float,
    Field(
        ge=MIN_DEADLINE_S,
        le=10,
        description=f"Answer within this many seconds (at least {MIN_DEADLINE_S}).",
    ),
]


class SearchRequest(BaseModel):
    domain: Domain
    titles: list[Title] = Field(min_length=1, max_length=20, examples=[["VP", "Head"]])
    limit: int = Field(10, ge=1, le=50)
    deadline_s: DeadlineSeconds | None = Field(
        None, description="Seconds to answer within; default ROLEFERRY_SEARCH_DEADLINE_S."
    )
    refresh: StrictBool = Field(
        False, description="Ask the providers even if a cached answer exists."
    )


class EnrichRequest(BaseModel):
    first_name: Name
    last_name: Name
    domain: Domain
    deadline_s: DeadlineSeconds | None = Field(
        None, description="Seconds to answer within; default ROLEFERRY_SEARCH_DEADLINE_S."
    )
    refresh: StrictBool = Field(
        False, description="Ask the providers even if a cached answer exists."
    )


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
