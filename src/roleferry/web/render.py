"""What every console page shares: the templates, the frame (who is signed in, the bell), error
text, and redirects that work for htmx and plain forms alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.errors import ApiError
from roleferry.notifications import routes as notifications_api
from roleferry.runtime import Runtime
from roleferry.web.session import ConsoleSession

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


async def page(
    request: Request,
    console: ConsoleSession | None,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    session: AsyncSession | None = None,
) -> HTMLResponse:
    """A page with the frame's needs: who is signed in, the token, the bell's count (read in
    the request's own session when the route has one)."""
    unread = 0
    if console is not None and session is not None:
        unread = (await notifications_api.unread_count(console.user, session)).unread
    elif console is not None:
        runtime: Runtime = request.app.state.runtime
        async with runtime.db.session() as own:
            unread = (await notifications_api.unread_count(console.user, own)).unread
    return templates.TemplateResponse(
        request,
        template,
        {"console": console, "unread": unread, "path": request.url.path, **context},
        status_code=status_code,
    )


def problem_of(exc: Exception) -> str:
    """What went wrong, in words a person can act on."""
    if isinstance(exc, ApiError):
        return exc.message
    return f"the server could not load this ({type(exc).__name__})"


def invalid(exc: ValidationError) -> str:
    """A schema's refusal as one line: each field and what it needs."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def refused(request: Request, exc: ApiError) -> HTMLResponse:
    """The API's refusal of an action as a readable alert, with when to retry if it said."""
    retry = exc.headers.get("Retry-After", "")
    problem = exc.message + (f" (try again in {retry} s)" if retry.isdigit() else "")
    return fragment(request, "_error.html", {"problem": problem, "retry": False}, exc.status_code)


def fragment(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def redirect_after(request: Request, target: str) -> Response:
    """After a change: htmx follows HX-Redirect (a 303 would be followed inside the XHR)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
