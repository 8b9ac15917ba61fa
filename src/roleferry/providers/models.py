"""The one shape every provider's people are converted into."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from roleferry.providers.catalog import SPECS

EmailStatus = Literal["verified", "likely", "guessed", "unknown"]
_LOCAL_PARTS = {"not_unlocked", "placeholder", "noemail"} | {
    email.partition("@")[0] for spec in SPECS for email in spec.placeholder_emails
}
_PLACEHOLDER = re.compile(rf"^({'|'.join(sorted(map(re.escape, _LOCAL_PARTS)))})@", re.I)


def real_email(value: object) -> str | None:
    """An address, or None for empty values and placeholders: those the specs declare (like
    Apollo's `email_not_unlocked@domain`) and a few generic ones."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if "@" not in email or _PLACEHOLDER.match(email):
        return None
    return email


def name_key(first: str | None, last: str | None) -> str:
    return f"{(first or '').strip().lower()} {(last or '').strip().lower()}".strip()


class Contact(BaseModel):
    """A person at a company, with where each field came from."""

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    title: str | None = None
    seniority: str | None = None
    department: str | None = None
    linkedin_url: str | None = None
    email: str | None = None
    email_status: EmailStatus | None = None
    email_confidence: int | None = Field(default=None, ge=0, le=100)
    company_domain: str
    company_name: str | None = None
    provider_ids: dict[str, str] = Field(default_factory=dict)
    sources: dict[str, str] = Field(
        default_factory=dict, description="Field name → the provider that supplied it."
    )

    @property
    def key(self) -> str:
        """Identity for dedupe: the LinkedIn profile when known, else the name."""
        return name_key(self.first_name, self.last_name) or (self.full_name or "").lower()

    def merge(self, other: Contact) -> None:
        """Fills what this contact lacks from another view of the same person."""
        for field in PERSON_FIELDS:
            if getattr(self, field) is None and getattr(other, field) is not None:
                setattr(self, field, getattr(other, field))
                self.sources[field] = other.sources.get(field, "")
        if other.email and (self.email is None or _better(other, self)):
            self.email = other.email
            self.email_status = other.email_status
            self.email_confidence = other.email_confidence
            self.sources["email"] = other.sources.get("email", "")
        self.provider_ids.update(other.provider_ids)


PERSON_FIELDS = (
    "first_name",
    "last_name",
    "full_name",
    "title",
    "seniority",
    "department",
    "linkedin_url",
    "company_name",
)
_RANK = {"verified": 3, "likely": 2, "guessed": 1, "unknown": 0, None: 0}


def _better(candidate: Contact, current: Contact) -> bool:
    return _RANK[candidate.email_status] > _RANK[current.email_status]


def sourced(contact: Contact, provider: str) -> Contact:
    """Marks every field a provider filled as coming from it."""
    contact.sources = {
        name: provider for name in (*PERSON_FIELDS, "email") if getattr(contact, name) is not None
    }
    return contact


class PersonQuery(BaseModel):
    """A named person at a company, whose work email we want."""

    first_name: str
    last_name: str
    domain: str
    title: str | None = None
    linkedin_url: str | None = None
