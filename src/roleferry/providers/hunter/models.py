"""Hunter v2 payloads. Field names differ by endpoint (finder: email/score/linkedin_url;
domain search: value/confidence/linkedin), so each has its own model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DomainEmail(_Model):
    value: str
    confidence: int | None = None
    first_name: str | None = None
    last_name: str | None = None
    position: str | None = None
    seniority: str | None = None
    department: str | None = None
    linkedin: str | None = None


class DomainData(_Model):
    domain: str | None = None
    organization: str | None = None
    emails: list[DomainEmail] = []


class DomainSearchResponse(_Model):
    data: DomainData


class Verification(_Model):
    date: str | None = None
    status: str | None = None


class FinderData(_Model):
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    score: int | None = None
    position: str | None = None
    company: str | None = None
    linkedin_url: str | None = None
    verification: Verification | None = None
    sources: list[dict[str, object]] = []


class FinderResponse(_Model):
    data: FinderData


class VerifierData(_Model):
    status: str
    email: str | None = None
    score: int | None = None


class VerifierResponse(_Model):
    data: VerifierData
