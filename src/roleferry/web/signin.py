"""Signing in with an API key (or, on the embedded default, as the local user) and out."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.api_client import KEY_FILE
from roleferry.runtime import Runtime
from roleferry.users import service as users
from roleferry.users.models import ApiKey
from roleferry.web.render import page
from roleferry.web.session import COOKIE, LIFETIME_S, CsrfConsole, cookie_value, is_https

SIGNIN_COOKIE = "rf_signin"
router = APIRouter(include_in_schema=False)


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _local_key(runtime: Runtime, request: Request) -> str | None:
    """The local admin's key, offered on the embedded default to a browser on this machine
    only: not through a proxy (which would make every visitor look local), not when the server
    is published under another address."""
    if not runtime.urls.is_sqlite or request.client is None:
        return None
    proxied = "x-forwarded-for" in request.headers or "forwarded" in request.headers
    if proxied or not _loopback(request.client.host):
        return None
    if not _loopback(urlsplit(runtime.public_url).hostname):
        return None
    path = runtime.settings.data_dir / KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _local_path(target: str) -> str:
    """Where to go after signing in: a path on this server only (no open redirect; browsers
    read `/\\host` as `//host`)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(
    request: Request, runtime: RuntimeDep, next: str = "/", error: str | None = None
) -> HTMLResponse:
    # Sign-in CSRF: a random token in a cookie and in the form (double submit), since there is
    # no session yet to tie it to.
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    response = await page(
        request,
        None,
        "signin.html",
        {
            "signin_token": token,
            "next": _local_path(next),
            "error": error,
            "local": _local_key(runtime, request) is not None,
        },
        status_code=401 if error else 200,
    )
    response.set_cookie(
        SIGNIN_COOKIE, token, httponly=True, samesite="strict", secure=is_https(request, "")
    )
    return response


@router.post("/signin", response_model=None)
async def signin(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    signin_token: Annotated[str, Form()] = "",
    api_key: Annotated[str, Form()] = "",
    local: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, signin_token):
        return await signin_page(
            request, runtime, next, "the sign-in form expired; please try again"
        )
    raw = _local_key(runtime, request) if local else api_key.strip()
    user = await users.authenticate(session, raw) if raw else None
    if raw is None or user is None:
        return await signin_page(
            request, runtime, next, "that API key is not valid (or was revoked)"
        )
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == users.hash_key(raw)))
    assert key is not None
    target = _local_path(next)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie_value(key),
        max_age=LIFETIME_S,
        httponly=True,
        samesite="lax",
        secure=is_https(request, runtime.public_url),
    )
    response.delete_cookie(SIGNIN_COOKIE)
    return response


@router.post("/signout")
async def signout(_console: CsrfConsole) -> RedirectResponse:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE)
    return response
