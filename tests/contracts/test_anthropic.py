"""The Anthropic simulator answers exactly as the official SDK's types describe: each Message,
stream event and error parses with `anthropic.types`, and carries every field of its type and
no other (the SDK's models accept extras, so keys are compared explicitly); stream events come
in the documented order."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from anthropic import types
from pydantic import BaseModel, TypeAdapter

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

HEADERS = {"x-api-key": SANDBOX_API_KEYS["anthropic"], "anthropic-version": "2023-06-01"}
BODY = {
    "model": "claude-sandbox-1",
    "max_tokens": 500,
    "messages": [{"role": "user", "content": "Write to Dana at Acme for the Staff Engineer role."}],
}
EVENTS: TypeAdapter[Any] = TypeAdapter(types.RawMessageStreamEvent)
ERROR_OBJECT: TypeAdapter[Any] = TypeAdapter(types.ErrorResponse.model_fields["error"].annotation)
ORDER = re.compile(
    r"message_start content_block_start (ping )?(content_block_delta )*content_block_stop "
    r"message_delta message_stop"
)


def exact(parsed: Any, data: Any, path: str = "$") -> list[str]:
    """Keys the SDK model does not declare, or declares and were not sent, at every level."""
    if isinstance(parsed, BaseModel):
        declared = set(type(parsed).model_fields)
        problems = [f"{path}.{k}: unknown field" for k in sorted(set(data) - declared)]
        problems += [f"{path}.{k}: missing field" for k in sorted(declared - set(data))]
        for name in declared & set(data):
            problems += exact(getattr(parsed, name), data[name], f"{path}.{name}")
        return problems
    if isinstance(parsed, list):
        return [p for i, item in enumerate(parsed) for p in exact(item, data[i], f"{path}[{i}]")]
    return []


def post(sb: SandboxServer, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{sb.base('anthropic')}/v1/messages", json=body, headers={**HEADERS, **headers}, timeout=10
    )


def stream_events(sb: SandboxServer, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(SSE event name, data) of one streamed answer, read off the wire."""
    response = post(sb, {**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({}, "end_turn"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"stop_sequences": [","]}, "stop_sequence"),
    ],
)
def test_message_parses_strictly(sb: SandboxServer, extra: dict[str, Any], reason: str) -> None:
    """A whole Message (each stop reason) is `anthropic.types.Message` with no field unknown
    or missing at any level."""
    response = post(sb, {**BODY, **extra})
    assert response.status_code == 200
    data = response.json()
    message = types.Message.model_validate(data)
    assert exact(message, data) == []
    assert message.stop_reason == reason


@pytest.mark.parametrize("extra", [{}, {"max_tokens": 5}, {"stop_sequences": [","]}])
def test_stream_events_parse_strictly_in_order(sb: SandboxServer, extra: dict[str, Any]) -> None:
    """Every stream event is a `RawMessageStreamEvent` variant (ping: `{"type": "ping"}`) named
    by its SSE `event:`, exact in its fields, in the documented order; the text and usage add
    up to the whole answer's."""
    events = stream_events(sb, {**BODY, **extra})
    names = " ".join(name for name, _ in events)
    assert ORDER.fullmatch(names), names
    for name, data in events:
        assert data["type"] == name
        if name == "ping":
            assert data == {"type": "ping"}
            continue
        assert exact(EVENTS.validate_python(data), data, name) == []
    whole = types.Message.model_validate(post(sb, {**BODY, **extra}).json())
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == whole.content[0].text  # type: ignore[union-attr]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == whole.stop_reason
    assert final["usage"]["output_tokens"] == whole.usage.output_tokens


def test_mid_stream_error_event_has_the_documented_shape(sb: SandboxServer) -> None:
    """An `error` event after HTTP 200 is `{"type": "error", "error": {type, message}}` with
    an SDK error object, after the events already sent in order."""
    sb.control("anthropic", mid_stream_error=1.0)
    events = stream_events(sb, BODY)
    name, data = events[-1]
    assert name == "error"
    assert set(data) == {"type", "error"}
    assert exact(ERROR_OBJECT.validate_python(data["error"]), data["error"]) == []
    assert [n for n, _ in events[:3]] == ["message_start", "content_block_start", "ping"]


@pytest.mark.parametrize(
    ("setup", "status", "kind"),
    [
        ({"body": {**BODY, "max_tokens": 0}}, 400, "invalid_request_error"),
        ({"body": {"max_tokens": 5, "messages": BODY["messages"]}}, 400, "invalid_request_error"),
        ({"headers": {"x-api-key": "sk-ant-wrong"}}, 401, "authentication_error"),
        ({"control": {"fail_next": 1, "error_status": 500}}, 500, "api_error"),
        ({"control": {"fail_next": 1, "error_status": 529}}, 529, "overloaded_error"),
        ({"control": {"rate_limit": "1/60"}, "twice": True}, 429, "rate_limit_error"),
    ],
)
def test_error_bodies_parse_strictly(
    sb: SandboxServer, setup: dict[str, Any], status: int, kind: str
) -> None:
    """Each error answer is an `anthropic.types.ErrorResponse` (type, error, request_id), exact
    in its fields, with the documented error type for its status."""
    if "control" in setup:
        sb.control("anthropic", **setup["control"])
    if setup.get("twice"):
        post(sb, BODY)
    response = post(sb, setup.get("body", BODY), **setup.get("headers", {}))
    assert response.status_code == status
    data = response.json()
    parsed = types.ErrorResponse.model_validate(data)
    assert exact(parsed, data) == []
    assert parsed.error.type == kind
    assert (parsed.request_id or "").startswith("req_")


def test_exact_reports_unknown_and_missing_fields() -> None:
    """The key comparison catches what the SDK's lenient models would let through."""
    data = {"type": "text", "text": "hi", "extra": 1}
    assert exact(types.TextBlock.model_validate(data), data) == [
        "$.extra: unknown field",
        "$.citations: missing field",
    ]


def test_unknown_route_error_parses_strictly(sb: SandboxServer) -> None:
    """A route the simulator does not have answers an exact `ErrorResponse`
    (`not_found_error`), as the API does."""
    response = httpx.get(f"{sb.base('anthropic')}/v1/nope", headers=HEADERS)
    assert response.status_code == 404
    data = response.json()
    parsed = types.ErrorResponse.model_validate(data)
    assert exact(parsed, data) == []
    assert parsed.error.type == "not_found_error"
