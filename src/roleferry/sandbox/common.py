"""What the simulators share: the sandbox object, the body reader, and the base exception that
each provider renders in its own error shape."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

if TYPE_CHECKING:
    from roleferry.sandbox.app import Sandbox


class ProviderHTTPError(Exception):
    """Raised inside a simulator; its provider's handler turns it into that provider's shape."""

    provider = ""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.field = field
        self.headers = headers or {}


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def json_object(request: Request, error: type[ProviderHTTPError]) -> dict[str, Any]:
    """The body as a JSON object; a body that is not one is the provider's own 400. A client
    that hung up mid-request (our client abandoning a cancelled job's call) gets a 400 it
    will never read, not an unhandled error in the server's log."""
    try:
        raw = await request.body()
    except ClientDisconnect as exc:
        raise error(400, "the client disconnected before sending its body") from exc
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested too deep
        raise error(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise error(400, "request body must be a JSON object", code="invalid_json")
    return body


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)
