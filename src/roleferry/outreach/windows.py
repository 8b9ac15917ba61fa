"""Send windows: days of week and hours in an IANA time zone (the recipient's where known,
else the sequence's). Wall-clock hours are converted through zoneinfo, so a 09:00 window
stays at 09:00 local across a DST change."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def valid_zone(name: str) -> bool:
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def next_open(now: float, window: dict[str, object], tz: str) -> float:
    """`now` if the window is open, else the unix time it next opens (within 8 days)."""
    days = set(window["days"])  # type: ignore[call-overload]
    start_hour = int(window["start_hour"])  # type: ignore[call-overload]
    end_hour = int(window["end_hour"])  # type: ignore[call-overload]
    zi = zone(tz)
    local = datetime.fromtimestamp(now, UTC).astimezone(zi)
    for offset in range(9):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        opens = datetime.combine(day, time(start_hour), zi).timestamp()
        closes = (
            datetime.combine(day + timedelta(days=1), time(0), zi).timestamp()
            if end_hour == 24
            else datetime.combine(day, time(end_hour), zi).timestamp()
        )
        if now < closes:
            return max(now, opens)
    raise ValueError("the send window has no open day")


def local_day(now: float, tz: str) -> int:
    """The calendar day (proleptic ordinal) `now` falls on in `tz`."""
    return datetime.fromtimestamp(now, UTC).astimezone(zone(tz)).date().toordinal()


def next_midnight(now: float, tz: str) -> float:
    """The unix time the next calendar day starts in `tz` (23 or 25 hours away across DST)."""
    zi = zone(tz)
    tomorrow = datetime.fromtimestamp(now, UTC).astimezone(zi).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), zi).timestamp()
