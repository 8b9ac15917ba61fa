"""Per-request fault shapes of the Anthropic simulator, set from the control plane:

    PUT /sandbox/_control/anthropic {"stream_faults": [{"kind": "stall", "after_tokens": 5}]}

Each request takes the first shape whose `model` matches (any model when unset) and uses up one
of its `times` (`null`: every request, e.g. a 529 storm on one model). The shapes are what
real streams do wrong: an error status before the first token, an `error` event, a stall, a
cut connection or a malformed chunk after N tokens, a slow first token, an event of a type
clients do not know yet (which they must skip), or a given reply text (for output checks)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal[
    "status",
    "error_event",
    "stall",
    "cut",
    "malformed",
    "slow_first_token",
    "unknown_event",
    "text",
]


class StreamFault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind = Field(description="What goes wrong.")
    after_tokens: int = Field(0, ge=0, description="Text pieces sent before it (stream kinds).")
    status: int = Field(529, ge=400, le=599, description="`status`: the HTTP status.")
    error_type: str | None = Field(
        None,
        max_length=64,
        description="The error's type (default: the status's, or overloaded_error for events).",
    )
    message: str | None = Field(None, max_length=200, description="The error's message.")
    seconds: float = Field(
        30.0,
        ge=0,
        le=600,
        description="`stall`/`slow_first_token`: how long (a stall ends the stream after it).",
    )
    text: str | None = Field(None, max_length=4000, description="`text`: the reply to send.")
    model: str | None = Field(None, max_length=100, description="Only requests for this model.")
    times: int | None = Field(1, ge=1, description="Requests it applies to; null: all.")


class CutConnection(Exception):
    """Raised inside a streaming body: the server drops the connection mid-response."""


def take(faults: list[StreamFault], model: str) -> StreamFault | None:
    """The shape this request gets, one of its uses spent (the list is the control's own)."""
    for index, fault in enumerate(faults):
        if fault.model is not None and fault.model != model:
            continue
        if fault.times is not None:
            if fault.times <= 1:
                del faults[index]
            else:
                faults[index] = fault.model_copy(update={"times": fault.times - 1})
        return fault
    return None
