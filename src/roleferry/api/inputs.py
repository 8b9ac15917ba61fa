"""Input types every route and model shares, so that one rule holds everywhere: integers that fit
the database, and domains as people paste them (a URL on the site is fine)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from annotated_types import Ge, Le
from pydantic import AfterValidator, Field

INT64_MAX = 2**63 - 1
# Text that is not blank: one character that is not whitespace. (\x1c-\x1f are whitespace to
# Python but not to pydantic's regex engine: named here, so the two agree.)
NOT_BLANK = r"[^\s\x1c-\x1f]"
# What a domain field accepts, documented as its pattern and checked with the same expression:
# an optional scheme, a host (up to 4 labels of up to 55 characters and a TLD, so at most 253
# characters in all), an optional trailing dot, port and path.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,53}[a-zA-Z0-9])?"
DOMAIN_PATTERN = (
    rf"^[ \t]*(?:[a-zA-Z][a-zA-Z0-9+.-]*://)?(?:{_LABEL}\.){{1,4}}[a-zA-Z]{{2,24}}\.?"
    r"(?::[0-9]{1,5})?(?:[/?#][^ \t\r\n]*)?[ \t]*$"
)
_DOMAIN = re.compile(DOMAIN_PATTERN)

# An integer id, cursor or count: a larger one cannot be stored (SQLite and PostgreSQL BIGINT),
# so it is refused as invalid input instead of failing in the driver.
DbInt = Annotated[int, Ge(0), Le(INT64_MAX)]
RowId = Annotated[int, Ge(1), Le(INT64_MAX)]


def normalise_domain(value: str) -> str:
    """The host of a domain or URL: `https://www.Acme.com:443/about` → `acme.com`.

    Scheme, port, path, query, a trailing dot and a leading `www.` are dropped; the rest is
    lowercased."""
    if not _DOMAIN.match(value):
        text = value.strip()
        raise ValueError(f"must be a domain like acme.com, or a URL on it (got {text[:100]!r})")
    text = value.strip()
    host = (urlsplit(text if "://" in text else "//" + text).hostname or "").rstrip(".")
    bare = host.removeprefix("www.")
    return bare if "." in bare else host


Domain = Annotated[
    str,
    Field(
        examples=["acme.com"],
        description="A domain, or a URL on it.",
        json_schema_extra={"pattern": DOMAIN_PATTERN},
    ),
    AfterValidator(normalise_domain),
]
