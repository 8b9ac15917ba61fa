"""Turning a JSON list or a CSV upload into contacts to enrich: every bad row reported with its
line, field and reason, the good rows kept."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

from roleferry.search.models import check_domain

MAX_ROWS = 10_000
FIELDS = ("first_name", "last_name", "domain", "title", "linkedin_url")
ALIASES = {
    "first name": "first_name",
    "firstname": "first_name",
    "last name": "last_name",
    "lastname": "last_name",
    "company_domain": "domain",
    "website": "domain",
    "company domain": "domain",
    "linkedin": "linkedin_url",
    "linkedin url": "linkedin_url",
}
_LINKEDIN = re.compile(r"^https?://([a-z]{2,3}\.)?linkedin\.com/", re.I)


class IntakeError(ValueError):
    """Nothing usable: an empty, unreadable or oversized input (422)."""

    def __init__(self, message: str, rejected: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected or []


@dataclass(frozen=True)
class Row:
    line: int
    first_name: str
    last_name: str
    domain: str
    title: str | None
    linkedin_url: str | None


def _check(line: int, raw: dict[str, Any]) -> tuple[Row | None, list[dict[str, Any]]]:
    problems = []
    values: dict[str, str | None] = {}
    for field in FIELDS:
        value = raw.get(field)
        if value is not None and not isinstance(value, str):
            problems.append({"line": line, "field": field, "reason": "must be text"})
            value = None
        value = (value or "").strip() or None
        values[field] = value
    for field in ("first_name", "last_name", "domain"):
        if not values[field]:
            problems.append({"line": line, "field": field, "reason": "is required"})
    for field, limit in (("first_name", 100), ("last_name", 100), ("title", 200)):
        if values[field] and len(values[field] or "") > limit:
            problems.append(
                {"line": line, "field": field, "reason": f"is longer than {limit} characters"}
            )
    if values["domain"]:
        try:
            values["domain"] = check_domain(values["domain"] or "")
        except ValueError as exc:
            problems.append({"line": line, "field": "domain", "reason": str(exc)})
    if values["linkedin_url"] and not _LINKEDIN.match(values["linkedin_url"] or ""):
        problems.append(
            {"line": line, "field": "linkedin_url", "reason": "must be a linkedin.com URL"}
        )
    if problems:
        return None, problems
    return Row(
        line,
        values["first_name"] or "",
        values["last_name"] or "",
        values["domain"] or "",
        values["title"],
        values["linkedin_url"],
    ), []


def _collect(rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[Row], list[dict[str, Any]]]:
    if not rows:
        raise IntakeError("no contacts: send at least one")
    if len(rows) > MAX_ROWS:
        raise IntakeError(
            f"{len(rows)} contacts is more than the {MAX_ROWS} a job takes; split the file"
        )
    good, rejected = [], []
    for line, raw in rows:
        row, problems = _check(line, raw)
        if row is None:
            rejected += problems
        else:
            good.append(row)
    if not good:
        raise IntakeError("no valid contacts; see the rejected rows", rejected)
    return good, rejected


def from_json(contacts: Any) -> tuple[list[Row], list[dict[str, Any]]]:
    if not isinstance(contacts, list):
        raise IntakeError(
            "`contacts` must be a list of {first_name, last_name, domain, title?, linkedin_url?}"
        )
    rows = []
    for index, item in enumerate(contacts, start=1):
        rows.append((index, item if isinstance(item, dict) else {"first_name": 1}))
    return _collect(rows)


def from_csv(data: bytes) -> tuple[list[Row], list[dict[str, Any]]]:
    """Line numbers are the file's: the header is line 1."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError("the file is not UTF-8 text; export it as CSV UTF-8") from exc
    if not text.strip():
        raise IntakeError("the file is empty")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (csv.Error, StopIteration) as exc:
        raise IntakeError(f"the file is not readable CSV: {exc}") from exc
    names = [ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [f for f in ("first_name", "last_name", "domain") if f not in names]
    if missing:
        raise IntakeError(
            "the header row needs the columns first_name, last_name and domain; "
            f"missing: {', '.join(missing)}"
        )
    rows = []
    try:
        for line, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            rows.append((line, dict(zip(names, record, strict=False))))
    except csv.Error as exc:
        raise IntakeError(f"the file is not readable CSV at line {reader.line_num}: {exc}") from exc
    return _collect(rows)
