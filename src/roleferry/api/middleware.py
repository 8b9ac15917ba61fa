"""Pure ASGI middleware: request ids with an access log line, and what request bodies may be
(their size and their encoding).

Pure ASGI (not BaseHTTPMiddleware) so streaming responses and the body stream pass untouched.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roleferry.errors import error_body
from roleferry.monitoring.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("roleferry.http")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Accepts a caller's X-Request-ID (or makes one), echoes it, and logs each request once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = getattr(scope.get("route"), "path", "unmatched")
                HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
                HTTP_LATENCY.labels(scope["method"], route).observe(elapsed)
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )


class BodyTooLarge(StarletteHTTPException):
    """Raised from the body stream; an HTTPException so that FastAPI's body parsing re-raises it
    as it is instead of turning it into a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes for this route")


class BodyLimitMiddleware:
    """Refuses request bodies over a limit with 413, before the route reads them, and encoded
    (e.g. gzip) bodies with 415: no route decodes them, and a decoder would undo the limit.

    `limits` maps a path prefix to its own limit (longest prefix wins); others get `default`.
    Content-Length is checked up front; chunked bodies are counted as they stream in.
    """

    def __init__(
        self,
        app: ASGIApp,
        default: int,
        limits: Mapping[str, int] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.default = default
        self.on_refused = on_refused
        self.limits = sorted((limits or {}).items(), key=lambda kv: len(kv[0]), reverse=True)

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            await _send_error(
                send,
                415,
                error_body(
                    "unsupported_media_type",
                    f"request bodies are not accepted with Content-Encoding: {encoding[:40]}; "
                    "send the body uncompressed",
                    {"accepted_encodings": ["identity"]},
                ),
            )
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if self.on_refused:
                self.on_refused(scope["path"])
            await _too_large(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if self.on_refused:
                        self.on_refused(scope["path"])
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    await _send_error(
        send,
        413,
        error_body(
            "payload_too_large",
            f"request body exceeds the limit of {limit} bytes for this route",
            {"limit_bytes": limit},
        ),
    )


async def _send_error(send: Send, status: int, error: dict[str, Any]) -> None:
    """Answers before the app runs; the unread body closes the connection."""
    body = json.dumps(error).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Any = scope.get("headers") or []
    for key, value in headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
