"""Input types every route and model shares, so that one rule holds everywhere: integers that fit
the database, and domains as people paste them (a URL on the site is fine)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from annotated_types import Ge, Le
from pydantic import AfterValidator, Field

INT64_MAX = 2**63 - 1
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

# An integer id, cursor or count: a larger one cannot be stored (SQLite and PostgreSQL BIGINT),
# so it is refused as invalid input instead of failing in the driver.
DbInt = Annotated[int, Ge(0), Le(INT64_MAX)]
RowId = Annotated[int, Ge(1), Le(INT64_MAX)]


def normalise_domain(value: str) -> str:
    """The host of a domain or URL: `https://www.Acme.com:443/about` → `acme.com`.

    Scheme, user, port, path, query, a trailing dot and a leading `www.` are dropped; the rest
    is lowercased (international names in their ASCII form)."""
    text = value.strip()
    try:
        host = urlsplit(text if "://" in text else "//" + text).hostname or ""
        host = host.rstrip(".").removeprefix("www.").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        host = ""
    if not _DOMAIN.match(host):
        raise ValueError(f"must be a domain like acme.com, or a URL on it (got {text[:100]!r})")
    return host


Domain = Annotated[
    str,
    Field(examples=["acme.com"], max_length=2048, description="A domain, or a URL on it."),
    AfterValidator(normalise_domain),
]
