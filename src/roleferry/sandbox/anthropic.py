"""Anthropic Messages API simulator: `POST /v1/messages`, whole or streamed (SSE).

The key is accepted as `x-api-key` (the documented header) or `Authorization: Bearer`, which
is what the official SDK (2.x) sends; `anthropic-version` is required, any value.

It writes a short outreach email from the prompt, deterministic per prompt, and streams it in
small pieces with the real event sequence: message_start, content_block_start, ping,
content_block_delta (text_delta)…, content_block_stop, message_delta (stop_reason, cumulative
usage), message_stop. Faults: Anthropic's error bodies (429 rate_limit_error with
retry-after, 529 overloaded_error…) and, by the `mid_stream_error` control, an `error` event
after HTTP 200, which the official SDK raises as an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from roleferry.sandbox.anthropic_faults import CutConnection, StreamFault, take
from roleferry.sandbox.common import ProviderHTTPError, json_object, json_response, sandbox_of

REQUESTS_PER_MINUTE = 50
CHUNK_DELAY_S = 0.005
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    503: "Service unavailable",
    529: "Overloaded",
}


class AnthropicError(ProviderHTTPError):
    provider = "anthropic"


def _body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _TYPES.get(status, "api_error"), "message": message},
        "request_id": "req_" + secrets.token_hex(12),
    }


def render_error(status: int) -> tuple[dict[str, object], dict[str, str]]:
    headers = {"retry-after": "1"} if status == 429 else {}
    return _body(status, _MESSAGES.get(status, "Internal server error")), headers


def error_response(exc: ProviderHTTPError) -> JSONResponse:
    return json_response(_body(exc.status, exc.message), exc.status, exc.headers)


_OPENERS = (
    "I came across {company}'s posting for {role} and wanted to reach out directly.",
    "I have been following {company} for a while, and {role} caught my eye.",
    "Your team at {company} is hiring for {role}, and I think I could help.",
)
_MIDDLES = (
    "In my last role I led a small team that shipped a customer-facing product from zero to "
    "steady growth, and I enjoy the messy early work of finding what users really need.",
    "I have spent the past few years building and running systems much like yours, and I care "
    "about shipping carefully and measuring what changes.",
    "Recently I rebuilt an onboarding flow that lifted activation noticeably, working closely "
    "with design, engineering and sales.",
)
_CLOSERS = (
    "Would you be open to a 15-minute chat next week?",
    "Could I send over a short note on how I would approach the first 90 days?",
    "If it makes sense, I would love to hear what the team is focused on this quarter.",
)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def _prompt_text(body: dict[str, Any]) -> tuple[str, str]:
    """The prompt (system and messages), and the assistant's prefill: a last message of the
    assistant's, which the reply continues."""
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(system)
    messages = list(body.get("messages", []))
    prefill = ""
    if messages and messages[-1].get("role") == "assistant":
        prefill = _content_text(messages.pop().get("content"))
    parts += [_content_text(m.get("content")) for m in messages]
    return "\n".join(parts), prefill


def write_email(prompt: str) -> str:
    """A short, plausible outreach note; the same prompt always gets the same note."""
    pick = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    name = re.search(r"^name: ([A-Z][\w'-]+)", prompt, re.M) or re.search(
        r"\b(?:to|Hi|Dear|named|for)\s+([A-Z][a-z]+)(?:\s+[A-Z][a-z]+)?", prompt
    )
    company = re.search(r"^company: (\S[^\n]{0,60})", prompt, re.M) or re.search(
        r"\bat\s+([A-Z][\w&.-]+(?:\s+[A-Z][\w&.-]+)?)", prompt
    )
    role = re.search(r"^role: (\S[^\n]{0,60})", prompt, re.M) or re.search(
        r"\b(?:for (?:the|a|an)\s+)([\w\s/-]{3,40}?)\s+(?:role|position|opening)", prompt
    )
    greeting = f"Hi {name.group(1)}," if name else "Hi there,"
    the_role = f"the {role.group(1).strip()} role" if role else "an open role"
    the_company = company.group(1).strip() if company else "your company"
    opener = _OPENERS[pick % 3].format(company=the_company, role=the_role)
    # Asked for a subject line (as our drafting prompt does), the note starts with one.
    subject = f"Subject: About {the_role} at {the_company}\n\n" if "Subject:" in prompt else ""
    return (
        f"{subject}{greeting}\n\n{opener} {_MIDDLES[(pick // 3) % 3]}\n\n"
        f"{_CLOSERS[(pick // 9) % 3]}\n\nBest regards"
    )


def _pieces(text: str) -> list[str]:
    """Splits text into stream pieces of one word with its following whitespace."""
    return re.findall(r"\S+\s*|\s+", text)


def _validate(request: Request, body: dict[str, Any]) -> None:
    if not request.headers.get("anthropic-version"):
        raise AnthropicError(400, "anthropic-version: header is required")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise AnthropicError(400, "model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise AnthropicError(400, "max_tokens: Field required and must be an integer of at least 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise AnthropicError(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise AnthropicError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not (isinstance(content, str) and content) and not (
            isinstance(content, list) and content
        ):
            raise AnthropicError(
                400, f"messages.{i}.content: must be a non-empty string or list of blocks"
            )
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise AnthropicError(400, "stop_sequences: must be a list of non-empty strings")


def _authorize(request: Request) -> dict[str, str]:
    sandbox = sandbox_of(request)
    auth = request.headers.get("authorization", "")
    key = request.headers.get("x-api-key") or (
        auth[7:] if auth.lower().startswith("bearer ") else ""
    )
    if not key or key != sandbox.api_keys["anthropic"]:
        raise AnthropicError(401, "invalid x-api-key")
    window = sandbox.control["anthropic"].window("requests", REQUESTS_PER_MINUTE, 60.0)
    allowed, remaining, reset_in = window.hit(key)
    reset = (datetime.now(UTC) + timedelta(seconds=reset_in)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        "anthropic-ratelimit-requests-limit": str(window.limit),
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset,
        "request-id": "req_" + secrets.token_hex(12),
    }
    if not allowed:
        headers["retry-after"] = str(max(1, round(reset_in)))
        raise AnthropicError(429, _MESSAGES[429], headers=headers)
    return headers


def _compose(
    body: dict[str, Any], fault: StreamFault | None = None
) -> tuple[list[str], str, str | None, int]:
    """The pieces to send, the stop reason, the stop sequence, and the input token count. With
    a prefill, the reply is the rest of the note after it (the whole note if it does not fit)."""
    prompt, prefill = _prompt_text(body)
    text = fault.text if fault is not None and fault.kind == "text" and fault.text else None
    text = text or write_email(prompt)
    prefill = prefill.rstrip()
    if prefill and text.startswith(prefill):
        text = text[len(prefill) :]
    stop_sequence = None
    for stop in body.get("stop_sequences", []):
        if stop in text:
            text = text[: text.index(stop)]
            stop_sequence = stop
            break
    pieces = _pieces(text)
    reason = "stop_sequence" if stop_sequence else "end_turn"
    if len(pieces) > body["max_tokens"]:
        pieces = pieces[: body["max_tokens"]]
        reason, stop_sequence = "max_tokens", None
    return pieces, reason, stop_sequence, max(1, (len(prompt) + len(prefill)) // 4)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """A Message's `usage` with every field the API publishes (no caching or server tools)."""
    return {
        "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "inference_geo": None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "output_tokens_details": None,
        "server_tool_use": None,
        "service_tier": "standard",
        "speed": None,
    }


def _message(
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    stop: tuple[str | None, str | None],
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A Message object with every published field, `null` where a feature is unused."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop[0],
        "stop_sequence": stop[1],
        "stop_details": None,
        "container": None,
        "diagnostics": None,
        "usage": usage,
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Ended(Exception):
    """A fault shape ended the stream (after its error event, stall or malformed chunk)."""


def _break(fault: StreamFault) -> bytes | None:
    """What a fault shape sends where it strikes: an error event, a chunk that is not JSON."""
    if fault.kind == "error_event":
        error_type = fault.error_type or "overloaded_error"
        return _sse(
            "error",
            {
                "type": "error",
                "error": {"type": error_type, "message": fault.message or "Overloaded"},
            },
        )
    if fault.kind == "unknown_event":
        return _sse("thinking_aloud", {"type": "thinking_aloud", "note": "a future event type"})
    if fault.kind == "malformed":
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"del\n\n'
    return None


async def _until_ended(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream's bytes until a fault shape ends it; a cut connection propagates, so the
    server drops the connection without finishing the chunked body."""
    try:
        async for chunk in events:
            yield chunk
    except _Ended:
        return


def router() -> APIRouter:
    api = APIRouter(prefix="/anthropic/v1")

    @api.post("/messages", response_model=None)
    async def messages(request: Request) -> Response:
        headers = _authorize(request)
        body = await json_object(request, AnthropicError)
        _validate(request, body)
        sandbox = sandbox_of(request)
        fault = take(sandbox.control["anthropic"].faults.stream_faults, body["model"])
        if fault is not None and fault.kind == "status":
            error = _body(fault.status, fault.message or _MESSAGES.get(fault.status, "Error"))
            error["error"]["type"] = fault.error_type or error["error"]["type"]
            extra = {"retry-after": "1"} if fault.status == 429 else {}
            return json_response(error, fault.status, {**headers, **extra})
        pieces, reason, stop_sequence, input_tokens = _compose(body, fault)
        message_id = "msg_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")
        if not body.get("stream"):
            return json_response(
                _message(
                    message_id,
                    body["model"],
                    [{"type": "text", "text": "".join(pieces), "citations": None}],
                    (reason, stop_sequence),
                    _usage(input_tokens, len(pieces)),
                ),
                headers=headers,
            )
        fail_mid_stream = (
            sandbox.control.rng.random() < sandbox.control["anthropic"].faults.mid_stream_error
        )

        stream_fault = fault if fault is not None and fault.kind != "text" else None

        async def events() -> AsyncIterator[bytes]:
            if stream_fault is not None and stream_fault.kind == "slow_first_token":
                await asyncio.sleep(stream_fault.seconds)
            start = _message(message_id, body["model"], [], (None, None), _usage(input_tokens, 1))
            yield _sse("message_start", {"type": "message_start", "message": start})
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": "", "citations": None},
                },
            )
            yield _sse("ping", {"type": "ping"})
            for n, piece in enumerate(pieces):
                if stream_fault is not None and n == stream_fault.after_tokens:
                    broken = _break(stream_fault)
                    if broken is not None:
                        yield broken
                        await asyncio.sleep(0)
                    if stream_fault.kind == "stall":
                        await asyncio.sleep(stream_fault.seconds)
                    if stream_fault.kind in ("error_event", "stall", "cut", "malformed"):
                        raise CutConnection if stream_fault.kind == "cut" else _Ended
                if fail_mid_stream and n == min(3, len(pieces) - 1):
                    yield _sse(
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                        },
                    )
                    return
                yield _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
                await asyncio.sleep(CHUNK_DELAY_S)
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": reason,
                        "stop_sequence": stop_sequence,
                        "stop_details": None,
                        "container": None,
                    },
                    "usage": {
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "input_tokens": input_tokens,
                        "output_tokens": len(pieces),
                        "output_tokens_details": None,
                        "server_tool_use": None,
                    },
                },
            )
            yield _sse("message_stop", {"type": "message_stop"})

        return StreamingResponse(
            _until_ended(events()),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    return api
