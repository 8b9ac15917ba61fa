"""The Credits page: balance, reserved, prices, the ledger, and buying a pack through Stripe
Checkout (the sandbox's hosted page on the embedded default); through the payments API's own
route functions."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.errors import ApiError
from roleferry.payments import routes as payments_api
from roleferry.web.render import fragment, invalid, page, problem_of, redirect_after, refused
from roleferry.web.session import Console, ConsoleSession, CsrfConsole

ENTRIES_SHOWN = 50
router = APIRouter(include_in_schema=False)


async def _balance(console: ConsoleSession, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        return {"credits": await payments_api.get_credits(console.user, runtime), "problem": None}
    except Exception as exc:
        return {"credits": None, "problem": problem_of(exc)}


@router.get("/credits", response_class=HTMLResponse)
async def credits_page(
    request: Request,
    console: Console,
    session: SessionDep,
    runtime: RuntimeDep,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    checkout: Annotated[str | None, Query(max_length=200, pattern=r"^cs_[A-Za-z0-9_]+$")] = None,
) -> Response:
    """Back from Checkout (`?checkout=<session>`), the success page's call grants the credits
    if the payment went through (the webhook may already have)."""
    context: dict[str, Any] = {"checkout": None, "checkout_problem": None}
    if checkout:
        try:
            context["checkout"] = await payments_api.get_checkout(checkout, console.user, runtime)
        except ApiError as exc:
            context["checkout_problem"] = exc.message
    context |= await _balance(console, runtime)
    try:
        ledger = await payments_api.get_ledger(console.user, runtime, ENTRIES_SHOWN, before)
        context |= {"entries": ledger.entries, "next_before": ledger.next_before}
    except Exception as exc:
        context |= {"entries": [], "next_before": None, "problem": problem_of(exc)}
    # A fresh Idempotency-Key per page: a double click buys once, a new visit buys anew.
    context["buy_key"] = secrets.token_urlsafe(16)
    return await page(request, console, "credits.html", context, session=session)


@router.get("/credits/balance", response_class=HTMLResponse)
async def balance(request: Request, console: Console, runtime: RuntimeDep) -> Response:
    """The live part of the page, polled by htmx (a webhook's grant shows without a reload)."""
    context = {**await _balance(console, runtime), "path": "/credits"}
    return fragment(request, "_balance.html", context)


@router.post("/credits/checkout", response_model=None)
async def buy(
    request: Request,
    console: CsrfConsole,
    runtime: RuntimeDep,
    session: SessionDep,
    pack: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
) -> Response:
    """`POST /api/v1/checkout`, then on to Stripe's hosted page."""
    try:
        body = payments_api.CheckoutIn.model_validate({"pack": pack})
        made = await payments_api.create_checkout(
            body, console.user, runtime, session, idempotency_key or None
        )
    except ValidationError as exc:
        return fragment(request, "_error.html", {"problem": invalid(exc), "retry": False}, 422)
    except ApiError as exc:
        return refused(request, exc)
    if made.url is None:
        return fragment(
            request, "_error.html", {"problem": "Stripe gave no checkout page", "retry": False}, 502
        )
    return redirect_after(request, made.url)
