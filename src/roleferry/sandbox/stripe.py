"""Stripe simulator: Checkout Sessions, PaymentIntents, Refunds and Events, form-encoded, with
Stripe's error shape and Idempotency-Key semantics, a stand-in hosted checkout page, and
events delivered signed with `Stripe-Signature` (t=…,v1=HMAC-SHA256 of "t.body").

Cards on the hosted page: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined;
4000 0000 0000 1000 pays later and succeeds, 4000 0000 0000 1018 pays later and fails (the
session completes unpaid, then `checkout.session.async_payment_succeeded|failed` follows after
`ASYNC_SETTLE_S`, as a bank debit does). The `drop_events` control keeps events of the named
types from being delivered: `GET /v1/events?delivery_success=false` lists them.
PaymentIntents confirmed in the API take `pm_card_visa` (succeeds) or
`pm_card_chargeDeclined` (declined), as in Stripe's test mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from roleferry.sandbox.common import ProviderHTTPError, json_response, sandbox_of

API_VERSION = "2026-10-28.endive"
IDEMPOTENCY_TTL_S = 24 * 3600
PER_SECOND = 25
PRICES: dict[str, tuple[int, str, str]] = {
    "price_credits_100": (1_000, "usd", "100 credits"),
    "price_credits_500": (4_000, "usd", "500 credits"),
    "price_credits_2000": (12_000, "usd", "2,000 credits"),
}
CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_ASYNC_OK = "4000000000001000"
CARD_ASYNC_FAILS = "4000000000001018"
ASYNC_SETTLE_S = 0.3
CARD_HINT = (
    "Use 4242 4242 4242 4242 (succeeds), 4000 0000 0000 0002 (declined), "
    "4000 0000 0000 1000 (pays later) or 4000 0000 0000 1018 (pays later, then fails)."
)
DOCS = "https://stripe.com/docs/error-codes"


class StripeError(ProviderHTTPError):
    provider = "stripe"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, code=code, headers=headers, field=param)
        self.type = type_
        self.extra = extra or {}


def _error_body(
    type_: str, message: str, code: str | None = None, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code:
        error.update(code=code, doc_url=f"{DOCS}/{code.replace('_', '-')}")
    if param:
        error["param"] = param
    error.update(extra)
    return {"error": error}


def render_error(status: int) -> tuple[dict[str, object], dict[str, str]]:
    if status == 429:
        return _error_body(
            "invalid_request_error", "Request rate limit exceeded.", "rate_limit"
        ), {}
    return _error_body("api_error", "An unknown error occurred, please try again."), {}


def error_response(exc: ProviderHTTPError) -> JSONResponse:
    type_ = getattr(exc, "type", "invalid_request_error")
    extra = getattr(exc, "extra", {})
    headers = {"request-id": "req_" + secrets.token_hex(7), **exc.headers}
    return json_response(
        _error_body(type_, exc.message, exc.code, exc.field, **extra), exc.status, headers
    )


def parse_form(items: list[tuple[str, str]]) -> dict[str, Any]:
    """`line_items[0][price]=p` → {"line_items": [{"price": "p"}]}, as Stripe reads forms."""
    root: dict[str, Any] = {}
    for key, value in items:
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            container: Any = [] if nxt is not None and (nxt.isdigit() or nxt == "[]") else {}
            if isinstance(node, list):
                index = len(node) if part == "[]" else int(part)
                while len(node) <= index:
                    node.append(None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = container
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, container)
    nested: dict[str, Any] = _lists_from_int_dicts(root)
    return nested


def _lists_from_int_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_from_int_dicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lists_from_int_dicts(v) for v in value if v is not None]
    return value


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_urlsafe(18).replace('-', 'a').replace('_', 'b')}"


@dataclass
class StripeState:
    secret: str
    webhook_url: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[str, str, int, bytes, float]] = field(
        default_factory=dict
    )

    def sign(self, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        digest = hmac.new(
            self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        return {
            "Stripe-Signature": f"t={timestamp},v1={digest}",
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }


def _intent(
    amount: int, currency: str, metadata: dict[str, Any], description: str | None = None
) -> dict[str, Any]:
    pid = _new_id("pi")
    return {
        "id": pid,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "currency": currency,
        "status": "requires_payment_method",
        "metadata": metadata,
        "client_secret": f"{pid}_secret_{secrets.token_hex(8)}",
        "created": int(time.time()),
        "livemode": False,
        "latest_charge": None,
        "payment_method": None,
        "last_payment_error": None,
        "description": description,
        "automatic_payment_methods": {"enabled": True},
    }


class StripeSimulator:
    """Payment state changes, and the events each change emits."""

    def __init__(self, request: Request) -> None:
        self.sandbox = sandbox_of(request)
        self.state: StripeState = self.sandbox.stripe

    def emit(self, type_: str, obj: dict[str, Any], idempotency_key: str | None = None) -> None:
        event_id = _new_id("evt")
        event: dict[str, Any] = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": "req_" + secrets.token_hex(7), "idempotency_key": idempotency_key},
            "type": type_,
            "data": {"object": json.loads(json.dumps(obj))},
        }
        self.state.events[event_id] = event
        if type_ in self.sandbox.control["stripe"].faults.drop_events:
            return

        def delivered() -> None:
            event["pending_webhooks"] = 0

        self.sandbox.stripe_sender.enqueue(
            self.sandbox.stripe_webhook_url(),
            json.dumps(event).encode(),
            self.state.sign,
            on_delivered=delivered,
        )

    def pay(self, intent: dict[str, Any], succeeds: bool) -> None:
        if succeeds:
            charge_id = _new_id("ch")
            charge = {
                "id": charge_id,
                "object": "charge",
                "amount": intent["amount"],
                "amount_refunded": 0,
                "currency": intent["currency"],
                "payment_intent": intent["id"],
                "paid": True,
                "refunded": False,
                "status": "succeeded",
                "created": int(time.time()),
                "metadata": intent["metadata"],
                "livemode": False,
            }
            self.state.charges[charge_id] = charge
            intent.update(
                status="succeeded",
                amount_received=intent["amount"],
                latest_charge=charge_id,
                payment_method="pm_card_visa",
                last_payment_error=None,
            )
            self.emit("payment_intent.succeeded", intent)
            self.emit("charge.succeeded", charge)
        else:
            intent.update(
                status="requires_payment_method",
                payment_method=None,
                last_payment_error={
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "generic_decline",
                    "message": "Your card was declined.",
                },
            )
            self.emit("payment_intent.payment_failed", intent)


def _authorize(request: Request) -> str:
    sandbox = sandbox_of(request)
    auth = request.headers.get("authorization", "")
    key = ""
    if auth.lower().startswith("bearer "):
        key = auth[7:]
    elif auth.lower().startswith("basic "):
        import base64

        key = base64.b64decode(auth[6:]).decode(errors="replace").split(":", 1)[0]
    if not key:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    if key != sandbox.api_keys["stripe"]:
        raise StripeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 12}{key[-4:]}")
    allowed, _, _ = sandbox.control["stripe"].window("second", PER_SECOND, 1.0).hit(key)
    if not allowed:
        raise StripeError(
            429,
            "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        )
    return key


async def _form(request: Request) -> dict[str, Any]:
    raw = await request.body()
    ctype = request.headers.get("content-type", "")
    if raw and "application/x-www-form-urlencoded" not in ctype:
        raise StripeError(
            400,
            "Invalid request: Stripe's API takes form-encoded bodies "
            "(application/x-www-form-urlencoded).",
        )
    from urllib.parse import parse_qsl

    return parse_form(parse_qsl(raw.decode(), keep_blank_values=True))


async def _idempotent(request: Request, key: str, handler: Any) -> Response:
    """Replays the first response for a key; refuses the key with other parameters."""
    state = sandbox_of(request).stripe
    idem = request.headers.get("idempotency-key")
    body = await request.body()
    fingerprint = hashlib.sha256(body).hexdigest()
    route = f"{request.method} {request.url.path}"
    now = time.time()
    if idem:
        if len(idem) > 255:
            raise StripeError(400, "Idempotency-Key must be at most 255 characters.")
        seen = state.idempotency.get((key, idem))
        if seen and now - seen[4] < IDEMPOTENCY_TTL_S:
            if seen[0] != route or seen[1] != fingerprint:
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they "
                    f"were first used with. Try using a key other than '{idem}' if you meant to "
                    "execute a different request.",
                    type_="idempotency_error",
                )
            return Response(
                seen[3],
                status_code=seen[2],
                media_type="application/json",
                headers={"idempotent-replayed": "true", "idempotency-key": idem},
            )
    try:
        response: Response = await handler()
    except StripeError as exc:
        response = error_response(exc)
    if idem and response.status_code < 500:
        state.idempotency[(key, idem)] = (
            route,
            fingerprint,
            response.status_code,
            bytes(response.body),
            now,
        )
        response.headers["idempotency-key"] = idem
    return response


def _int(value: Any, param: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise StripeError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        ) from exc
    if number < minimum:
        raise StripeError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=param,
        )
    return number


def _line_items(params: dict[str, Any]) -> tuple[int, str, list[dict[str, Any]]]:
    items = params.get("line_items")
    if not isinstance(items, list) or not items:
        raise StripeError(
            400,
            "You must provide at least one line item (line_items) in `payment` mode.",
            code="parameter_missing",
            param="line_items",
        )
    total, currency, rows = 0, None, []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise StripeError(
                400, "Invalid line item.", code="parameter_invalid", param=f"line_items[{i}]"
            )
        quantity = _int(item.get("quantity", 1), f"line_items[{i}][quantity]", 1)
        if "price" in item:
            if item["price"] not in PRICES:
                raise StripeError(
                    400,
                    f"No such price: '{item['price']}'",
                    code="resource_missing",
                    param=f"line_items[{i}][price]",
                )
            amount, cur, name = PRICES[item["price"]]
        elif isinstance(item.get("price_data"), dict):
            data = item["price_data"]
            if not data.get("currency"):
                raise StripeError(
                    400,
                    "Missing required param: line_items[0][price_data][currency].",
                    code="parameter_missing",
                    param=f"line_items[{i}][price_data][currency]",
                )
            amount = _int(data.get("unit_amount"), f"line_items[{i}][price_data][unit_amount]", 0)
            cur = str(data["currency"]).lower()
            name = str((data.get("product_data") or {}).get("name") or "Item")
        else:
            raise StripeError(
                400,
                f"You must specify either `price` or `price_data` in line_items[{i}].",
                code="parameter_missing",
                param=f"line_items[{i}][price]",
            )
        if currency and cur != currency:
            raise StripeError(400, "All line items must use the same currency.", param="line_items")
        currency = cur
        total += amount * quantity
        rows.append({"description": name, "quantity": quantity, "amount_total": amount * quantity})
    return total, currency or "usd", rows


def router() -> APIRouter:
    api = APIRouter(prefix="/stripe")

    @api.post("/v1/checkout/sessions")
    async def create_session(request: Request) -> Response:
        key = _authorize(request)

        async def handle() -> Response:
            params = await _form(request)
            mode = params.get("mode")
            if mode not in ("payment", "setup", "subscription"):
                raise StripeError(
                    400,
                    "Missing required param: mode." if not mode else f"Invalid mode: {mode}",
                    code="parameter_missing" if not mode else "parameter_invalid",
                    param="mode",
                )
            ui_mode = params.get("ui_mode", "hosted")
            if ui_mode in ("hosted", "hosted_page") and not params.get("success_url"):
                raise StripeError(
                    400,
                    "Missing required param: success_url.",
                    code="parameter_missing",
                    param="success_url",
                )
            total, currency, rows = _line_items(params) if mode == "payment" else (0, "usd", [])
            if mode == "payment" and total < 50:
                raise StripeError(
                    400,
                    "The Checkout Session's total amount due must add up to at least $0.50 usd",
                    param="line_items",
                )
            sim = StripeSimulator(request)
            sid = _new_id("cs")
            session = {
                "id": sid,
                "object": "checkout.session",
                "mode": mode,
                "ui_mode": ui_mode,
                "amount_subtotal": total,
                "amount_total": total,
                "currency": currency,
                "client_reference_id": params.get("client_reference_id"),
                "customer": params.get("customer"),
                "customer_email": params.get("customer_email"),
                "metadata": params.get("metadata") or {},
                "payment_intent": None,
                "payment_status": "unpaid",
                "status": "open",
                "livemode": False,
                "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"),
                "created": int(time.time()),
                "expires_at": _int(
                    params.get("expires_at", int(time.time()) + 86400), "expires_at"
                ),
                "url": str(request.url_for("pay_page", session_id=sid))
                if ui_mode in ("hosted", "hosted_page")
                else None,
                "payment_intent_data": params.get("payment_intent_data") or {},
                "line_items_preview": rows,
            }
            sim.state.sessions[sid] = session
            return json_response(
                _public_session(session), headers={"request-id": "req_" + secrets.token_hex(7)}
            )

        return await _idempotent(request, key, handle)

    @api.get("/v1/checkout/sessions/{session_id}")
    async def get_session(request: Request, session_id: str) -> JSONResponse:
        _authorize(request)
        session = sandbox_of(request).stripe.sessions.get(session_id)
        if session is None:
            raise StripeError(
                404,
                f"No such checkout.session: '{session_id}'",
                code="resource_missing",
                param="id",
            )
        view = _public_session(session)
        if "line_items" in request.query_params.getlist("expand[]"):
            view["line_items"] = {
                "object": "list",
                "data": session["line_items_preview"],
                "has_more": False,
                "url": f"/v1/checkout/sessions/{session_id}/line_items",
            }
        return json_response(view)

    @api.get("/v1/events")
    async def list_events(request: Request) -> JSONResponse:
        _authorize(request)
        params = parse_form(list(request.query_params.multi_items()))
        limit = _int(params.get("limit", 10), "limit", 1)
        types = params.get("types")
        wanted = set(types if isinstance(types, list) else [types]) if types else None
        delivered = params.get("delivery_success")
        rows = [
            event
            for event in reversed(sandbox_of(request).stripe.events.values())
            if (wanted is None or event["type"] in wanted)
            and (delivered is None or (event["pending_webhooks"] == 0) == (delivered == "true"))
        ]
        if "starting_after" in params:
            ids = [row["id"] for row in rows]
            if params["starting_after"] not in ids:
                raise StripeError(
                    404,
                    f"No such event: '{params['starting_after']}'",
                    code="resource_missing",
                    param="starting_after",
                )
            rows = rows[ids.index(params["starting_after"]) + 1 :]
        return json_response(
            {
                "object": "list",
                "data": rows[:limit],
                "has_more": len(rows) > limit,
                "url": "/v1/events",
            }
        )

    @api.post("/v1/payment_intents")
    async def create_intent(request: Request) -> Response:
        key = _authorize(request)

        async def handle() -> Response:
            params = await _form(request)
            if "amount" not in params:
                raise StripeError(
                    400, "Missing required param: amount.", code="parameter_missing", param="amount"
                )
            amount = _int(params["amount"], "amount", 50)
            if not params.get("currency"):
                raise StripeError(
                    400,
                    "Missing required param: currency.",
                    code="parameter_missing",
                    param="currency",
                )
            sim = StripeSimulator(request)
            intent = _intent(
                amount,
                str(params["currency"]).lower(),
                params.get("metadata") or {},
                params.get("description"),
            )
            sim.state.intents[intent["id"]] = intent
            if str(params.get("confirm", "false")).lower() == "true":
                method = params.get("payment_method")
                if method not in (
                    "pm_card_visa",
                    "pm_card_chargeDeclined",
                    "pm_card_visa_chargeDeclined",
                ):
                    raise StripeError(
                        400,
                        "A payment_method is required to confirm: use pm_card_visa or "
                        "pm_card_chargeDeclined in the sandbox.",
                        code="parameter_missing",
                        param="payment_method",
                    )
                sim.pay(intent, succeeds=method == "pm_card_visa")
                if intent["status"] != "succeeded":
                    raise StripeError(
                        402,
                        "Your card was declined.",
                        type_="card_error",
                        code="card_declined",
                        extra={"decline_code": "generic_decline", "payment_intent": intent},
                    )
            return json_response(intent)

        return await _idempotent(request, key, handle)

    @api.get("/v1/payment_intents/{intent_id}")
    async def get_intent(request: Request, intent_id: str) -> JSONResponse:
        _authorize(request)
        intent = sandbox_of(request).stripe.intents.get(intent_id)
        if intent is None:
            raise StripeError(
                404,
                f"No such payment_intent: '{intent_id}'",
                code="resource_missing",
                param="intent",
            )
        return json_response(intent)

    @api.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        key = _authorize(request)

        async def handle() -> Response:
            params = await _form(request)
            sim = StripeSimulator(request)
            state = sim.state
            charge = None
            if params.get("charge"):
                charge = state.charges.get(params["charge"])
                if charge is None:
                    raise StripeError(
                        404,
                        f"No such charge: '{params['charge']}'",
                        code="resource_missing",
                        param="charge",
                    )
            elif params.get("payment_intent"):
                intent = state.intents.get(params["payment_intent"])
                if intent is None:
                    raise StripeError(
                        404,
                        f"No such payment_intent: '{params['payment_intent']}'",
                        code="resource_missing",
                        param="payment_intent",
                    )
                charge = state.charges.get(intent["latest_charge"] or "")
                if charge is None:
                    raise StripeError(
                        400,
                        f"PaymentIntent {intent['id']} has no successful charge to refund.",
                        code="charge_not_refundable",
                        param="payment_intent",
                    )
            else:
                raise StripeError(
                    400,
                    "One of the following params should be provided for this request: "
                    "payment_intent or charge.",
                    code="parameter_missing",
                )
            left = charge["amount"] - charge["amount_refunded"]
            amount = _int(params.get("amount", left), "amount", 1)
            if left <= 0:
                raise StripeError(
                    400,
                    f"Charge {charge['id']} has already been refunded.",
                    code="charge_already_refunded",
                )
            if amount > left:
                raise StripeError(
                    400,
                    f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on "
                    f"charge (${left / 100:.2f})",
                    param="amount",
                )
            refund = {
                "id": _new_id("re"),
                "object": "refund",
                "amount": amount,
                "charge": charge["id"],
                "payment_intent": charge["payment_intent"],
                "currency": charge["currency"],
                "status": "succeeded",
                "reason": params.get("reason"),
                "created": int(time.time()),
                "metadata": params.get("metadata") or {},
            }
            state.refunds[refund["id"]] = refund
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            sim.emit("refund.created", refund)
            sim.emit("charge.refunded", charge)
            return json_response(refund)

        return await _idempotent(request, key, handle)

    @api.get("/v1/events/{event_id}")
    async def get_event(request: Request, event_id: str) -> JSONResponse:
        _authorize(request)
        event = sandbox_of(request).stripe.events.get(event_id)
        if event is None:
            raise StripeError(
                404, f"No such event: '{event_id}'", code="resource_missing", param="id"
            )
        return json_response(event)

    @api.get("/pay/{session_id}", response_class=HTMLResponse)
    async def pay_page(request: Request, session_id: str) -> HTMLResponse:
        session = sandbox_of(request).stripe.sessions.get(session_id)
        if session is None:
            return HTMLResponse(
                _page("Not found", "<p>No such Checkout Session.</p>"), status_code=404
            )
        return HTMLResponse(_page("Pay", _pay_form(session)))

    @api.post("/pay/{session_id}", response_model=None)
    async def pay_submit(request: Request, session_id: str) -> Response:
        sim = StripeSimulator(request)
        session = sim.state.sessions.get(session_id)
        if session is None:
            return HTMLResponse(
                _page("Not found", "<p>No such Checkout Session.</p>"), status_code=404
            )
        if session["status"] != "open":
            return HTMLResponse(
                _page("Closed", "<p>This Checkout Session is no longer active.</p>"),
                status_code=400,
            )
        form = await request.form()
        card = re.sub(r"\D", "", str(form.get("card_number", "")))
        if card in (CARD_ASYNC_OK, CARD_ASYNC_FAILS):
            return _pay_later(sim, session, succeeds=card == CARD_ASYNC_OK)
        if card not in (CARD_OK, CARD_DECLINED):
            note = f"<p class=err>Your card number is invalid. {CARD_HINT}</p>"
            return HTMLResponse(_page("Pay", note + _pay_form(session)), status_code=400)
        intent = sim.state.intents.get(session["payment_intent"] or "")
        if intent is None:
            metadata = dict((session.get("payment_intent_data") or {}).get("metadata") or {})
            intent = _intent(session["amount_total"], session["currency"], metadata)
            sim.state.intents[intent["id"]] = intent
            session["payment_intent"] = intent["id"]
        sim.pay(intent, succeeds=card == CARD_OK)
        if intent["status"] != "succeeded":
            note = "<p class=err>Your card was declined.</p>"
            return HTMLResponse(_page("Pay", note + _pay_form(session)), status_code=402)
        session.update(status="complete", payment_status="paid")
        sim.emit("checkout.session.completed", _public_session(session))
        target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)
        return RedirectResponse(target, status_code=303)

    return api


def _pay_later(sim: StripeSimulator, session: dict[str, Any], *, succeeds: bool) -> Response:
    """A delayed payment method: the session completes unpaid now and settles a moment later."""
    metadata = dict((session.get("payment_intent_data") or {}).get("metadata") or {})
    intent = _intent(session["amount_total"], session["currency"], metadata)
    intent["status"] = "processing"
    sim.state.intents[intent["id"]] = intent
    session.update(status="complete", payment_status="unpaid", payment_intent=intent["id"])
    sim.emit("checkout.session.completed", _public_session(session))

    def settle() -> None:
        sim.pay(intent, succeeds=succeeds)
        if succeeds:
            session["payment_status"] = "paid"
            sim.emit("checkout.session.async_payment_succeeded", _public_session(session))
        else:
            sim.emit("checkout.session.async_payment_failed", _public_session(session))

    asyncio.get_running_loop().call_later(ASYNC_SETTLE_S, settle)
    target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
    return RedirectResponse(target, status_code=303)


def _public_session(session: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in session.items() if k not in ("line_items_preview", "payment_intent_data")
    }


def _pay_form(session: dict[str, Any]) -> str:
    rows = "".join(
        f"<li>{html.escape(r['description'])} x {r['quantity']}: {r['amount_total'] / 100:.2f}</li>"
        for r in session.get("line_items_preview", [])
    )
    total = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
    return (
        f"<ul>{rows}</ul><p><b>Total: {total}</b></p><form method=post><label>Card number "
        "<input name=card_number value='4242 4242 4242 4242'></label> "
        f"<button type=submit>Pay</button></form><p class=hint>Sandbox: {CARD_HINT}</p>"
    )


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{title} · Stripe sandbox</title>"
        "<style>body{font-family:system-ui;max-width:28rem;margin:3rem auto}.err{color:#b00020}"
        ".hint{color:#666;font-size:.85rem}</style></head>"
        f"<body><h1>Stripe sandbox checkout</h1>{body}</body></html>"
    )
