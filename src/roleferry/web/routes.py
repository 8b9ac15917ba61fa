"""The console: server-rendered pages over the same route functions and services the JSON API
uses, so that every page action is an API call a user could make with their key.

Pages need a session (signed in with an API key, `web.session`); every form and every htmx
request that changes something carries the session's CSRF token."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from roleferry.runtime import Runtime
from roleferry.web import (
    credits_page,
    drafts_page,
    integrations_page,
    jobs_page,
    notifications_page,
    search_page,
    sequences_page,
    signin,
    webhook_log,
)
from roleferry.web.render import page
from roleferry.web.session import AdminRequired, CsrfFailed, SignInRequired, read_session

PAGES = (
    signin.router,
    integrations_page.router,
    search_page.router,
    jobs_page.router,
    drafts_page.router,
    sequences_page.router,
    credits_page.router,
    notifications_page.router,
    webhook_log.router,
)


def install(app: FastAPI) -> None:
    """The console's routes and what its session errors become: pages, not JSON."""
    for pages in PAGES:
        app.include_router(pages)

    async def sign_in(request: Request, _exc: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/signin"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        message = (
            "this page is for admins only"
            if isinstance(exc, AdminRequired)
            else "the form was stale or came from another site (CSRF check); reload and retry"
        )
        runtime: Runtime = request.app.state.runtime
        async with runtime.db.session() as session:
            console = await read_session(request, session)
        return await page(
            request, console, "error.html", {"problem": message, "title": "Not allowed"}, 403
        )

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(AdminRequired, forbidden)
    app.add_exception_handler(CsrfFailed, forbidden)
