"""Clay Public API search payloads (the contract chosen in docs/sandbox.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClayPerson(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    full_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    linkedin_url: str | None = None
    email: str | None = None
    company_domain: str | None = None
    company_name: str | None = None


class SearchPage(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    search_id: str = Field(alias="searchId")
    data: list[ClayPerson]
    has_more: bool = Field(alias="hasMore")
