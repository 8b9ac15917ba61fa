"""`roleferry draft` at the terminal: reads the SSE events of a draft as they arrive and
prints its text word by word; a `restart` starts the text over on a new line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def sse_events(lines: Iterable[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(event, data) pairs from the lines of a text/event-stream."""
    name, data = "message", ""
    for line in lines:
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def follow(
    lines: Iterable[str], write: Callable[[str], None], note: Callable[[str], None]
) -> dict[str, Any]:
    """Prints each delta with `write` as it comes and what happened with `note`; returns the
    last event's data (`done` or `incomplete`) with its name under `event`."""
    last: dict[str, Any] = {"event": "none"}
    for name, data in sse_events(lines):
        if name == "delta":
            write(data["text"])
        elif name == "restart":
            write("\n")
            note(f"[that text failed a check ({data['reason']}); writing it again]")
        elif name == "start" and data.get("source") == "template":
            note("[no model answered in time: the template's draft]")
        elif name in ("done", "incomplete"):
            last = {"event": name, **data}
    write("\n")
    return last
