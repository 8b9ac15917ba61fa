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


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(system)
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [b.get("text", "") for b in content if isinstance(b, dict)]
    return "\n".join(parts)


def write_email(prompt: str) -> str:
    """A short, plausible outreach note; the same prompt always gets the same note."""
    pick = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    name = re.search(r"\b(?:to|Hi|Dear|named|for)\s+([A-Z][a-z]+)(?:\s+[A-Z][a-z]+)?", prompt)
    company = re.search(r"\bat\s+([A-Z][\w&.-]+(?:\s+[A-Z][\w&.-]+)?)", prompt)
    role = re.search(
        r"\b(?:for (?:the|a|an)\s+)([\w\s/-]{3,40}?)\s+(?:role|position|opening)", prompt
    )
    greeting = f"Hi {name.group(1)}," if name else "Hi there,"
    opener = _OPENERS[pick % 3].format(
        company=company.group(1) if company else "your company",
        role=f"the {role.group(1).strip()} role" if role else "an open role",
    )
    return (
        f"{greeting}\n\n{opener} {_MIDDLES[(pick // 3) % 3]}\n\n{_CLOSERS[(pick // 9) % 3]}\n\n"
        "Best regards"
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


def _compose(body: dict[str, Any]) -> tuple[list[str], str, str | None, int]:
    """The pieces to send, the stop reason, the stop sequence, and the input token count."""
    prompt = _prompt_text(body)
    text = write_email(prompt)
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
    return pieces, reason, stop_sequence, max(1, len(prompt) // 4)


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


def router() -> APIRouter:
    api = APIRouter(prefix="/anthropic/v1")

    @api.post("/messages", response_model=None)
    async def messages(request: Request) -> Response:
        headers = _authorize(request)
        body = await json_object(request, AnthropicError)
        _validate(request, body)
        pieces, reason, stop_sequence, input_tokens = _compose(body)
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
        sandbox = sandbox_of(request)
        fail_mid_stream = (
            sandbox.control.rng.random() < sandbox.control["anthropic"].faults.mid_stream_error
        )

        async def events() -> AsyncIterator[bytes]:
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
            events(),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    return api
