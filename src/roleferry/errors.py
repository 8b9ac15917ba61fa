"""API errors and the one JSON shape every 4xx/5xx takes.

    ApiError
    ├── BadRequest            400 bad_request
    ├── Unauthorized          401 unauthorized
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict
    ├── PayloadTooLarge       413 payload_too_large
    ├── Unprocessable         422 validation_error
    ├── TooManyRequests       429 rate_limited
    └── ServiceUnavailable    503 service_unavailable

Body: {"error": {"code": "...", "message": "...", "details": ...}}
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from roleferry.api.inputs import NOT_BLANK

log = structlog.get_logger(__name__)


class ApiError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(ApiError):
    status_code, code = 400, "bad_request"


class Unauthorized(ApiError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str = "a valid API key is required", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(ApiError):
    status_code, code = 403, "forbidden"


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status_code, code = 413, "payload_too_large"


class Unprocessable(ApiError):
    status_code, code = 422, "validation_error"


class TooManyRequests(ApiError):
    status_code, code = 429, "rate_limited"


class ServiceUnavailable(ApiError):
    status_code, code = 503, "service_unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    """The one error shape, as the API reference shows it."""

    error: ErrorDetail


_REASONS = {
    400: "The request is malformed (e.g. its JSON, or its text is not UTF-8).",
    401: "A valid API key is required.",
    403: "The key may not use this route.",
    404: "No such route or resource.",
    409: "Conflicts with the resource's current state.",
    413: "The body is over this route's size limit.",
    415: "The body's content type or encoding is not accepted.",
    422: "The request is well-formed but invalid; `details` names each field.",
    429: "Too many requests; see Retry-After.",
    503: "Temporarily unable to answer; see Retry-After.",
}
PUBLIC_ERRORS = (400, 413, 415, 422, 503)
AUTHENTICATED_ERRORS = (*PUBLIC_ERRORS, 401, 403, 404, 409, 429)


def documented_errors(statuses: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """The error answers to declare in the OpenAPI document, in the one error shape."""
    return {status: {"model": ErrorOut, "description": _REASONS[status]} for status in statuses}


_CODES = {413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error"}


def _code_for(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


_JSON_TYPES = ("application/json", "+json")
_SEND_JSON = "send the body as JSON with `Content-Type: application/json`"
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def _reason(err: dict[str, Any], body: Any, content_type: str) -> tuple[str, str]:
    """The field and what to fix in it; the parts pydantic and FastAPI word for programmers
    reworded for people."""
    loc = err.get("loc", ())
    kind = err.get("type")
    if kind == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
        line, column = _line_and_column(body, loc[1])
        error = (err.get("ctx") or {}).get("error", "invalid JSON")
        return "body", f"the body is not valid JSON: line {line}, column {column}: {error}"
    field = ".".join(str(p) for p in loc if p != "body")
    if loc == ("body",) and kind == "missing":
        return "body", "the body is empty; send a JSON object"
    if loc == ("body",) and not content_type.split(";")[0].strip().endswith(_JSON_TYPES):
        sent = content_type or "no Content-Type"
        return "body", f"{_SEND_JSON} (got {sent})"
    if loc == ("body",) and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "body", "the body must be a JSON object, not another JSON value"
    if kind == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == NOT_BLANK:
        return field, "must not be blank"
    message = str(err.get("msg", "invalid"))
    for prefix in _PYDANTIC_PREFIXES:
        message = message.removeprefix(prefix)
    return field, message


def _line_and_column(document: Any, position: int) -> tuple[int, int]:
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _describe_validation(
    errors: list[Any], body: Any = None, content_type: str = ""
) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in errors:
        field, reason = _reason(err, body, content_type)
        details.append({"field": field, "reason": reason, "type": err.get("type")})
    first = details[0] if details else {"field": "", "reason": "invalid request"}
    where = f"{first['field']}: " if first["field"] not in ("", "body") else ""
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{where}{first['reason']}{more}", details


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """FastAPI answers any body it cannot decode with a bare "error parsing the body"; say why."""
    cause = exc.__cause__
    if exc.status_code != 400 or exc.detail != "There was an error parsing the body":
        return None
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"the body is not UTF-8 text (byte {cause.object[cause.start]:#04x} at position "
            f"{cause.start}); send JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply; send at most a few levels of objects"
    if isinstance(cause, ValueError):  # e.g. an integer of more digits than Python reads
        return f"the body is not valid JSON: {str(cause)[:200]}"
    return None


def _allowed_methods(app: FastAPI, request: Request, headers: dict[str, str]) -> str:
    """Every method the path takes: Starlette names only those of the first route that
    matched the path, though each method of a path is its own route."""
    methods = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
    for template, item in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {method.upper() for method in item}
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        message, details = _describe_validation(list(exc.errors()), exc.body, content_type)
        if details and details[0]["reason"].startswith(_SEND_JSON):
            return error_response(415, "unsupported_media_type", message, details)
        return error_response(422, "validation_error", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        message = _unparsable_body(exc) or message
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(app, request, headers or {})}
        return error_response(exc.status_code, _code_for(exc.status_code), message, None, headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error_type=type(exc).__name__)
        return error_response(500, "internal_error", "an unexpected error occurred")
