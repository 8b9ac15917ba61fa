"""The parts of Apollo's payloads we read; unknown fields are ignored, as Apollo adds many."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Organization(_Model):
    id: str | None = None
    name: str | None = None
    primary_domain: str | None = None


class Person(_Model):
    id: str
    first_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    title: str | None = None
    email: str | None = None
    email_status: str | None = None
    linkedin_url: str | None = None
    seniority: str | None = None
    departments: list[str] | None = None
    organization: Organization | None = None


class SearchPerson(_Model):
    id: str
    first_name: str | None = None
    title: str | None = None
    has_email: bool | None = None


class SearchResponse(_Model):
    people: list[SearchPerson]
    total_entries: int | None = None


class BulkMatchResponse(_Model):
    matches: list[Person | None]
