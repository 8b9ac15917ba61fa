"""The one way the API writes a time: ISO 8601 in UTC with a `Z`, to the millisecond
(`2026-11-26T04:05:06.123Z`). The database hands back aware datetimes, naive ones (SQLite)
and unix seconds; all of them come out the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

ISO_Z_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


def as_utc(value: datetime | float | int | str) -> datetime:
    """An aware UTC datetime from an aware or naive (taken as UTC) datetime, unix seconds
    or an ISO string."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_z(value: datetime | float | int | str) -> str:
    moment = as_utc(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _validate(value: Any) -> Any:
    return as_utc(value) if isinstance(value, datetime | float | int | str) else value


UtcDateTime = Annotated[
    datetime,
    BeforeValidator(_validate),
    PlainSerializer(iso_z, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": ISO_Z_PATTERN,
            "examples": ["2026-11-26T04:05:06.123Z"],
        }
    ),
]
