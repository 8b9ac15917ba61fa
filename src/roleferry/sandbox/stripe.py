"""Stripe simulator: Checkout Sessions, PaymentIntents, Charges, Refunds and Events (retrieve,
list with Stripe's filters, `expand[]`), form-encoded, with Stripe's error shape and
Idempotency-Key semantics, a stand-in hosted checkout page, and events delivered signed with
`Stripe-Signature` (t=…,v1=HMAC-SHA256 of "t.body"). Objects carry every field Stripe
publishes (see stripe_objects.py). A `Stripe-Account` (or `Stripe-Context`) header acts for a
connected account: its objects and events exist only for it, and its events name it in
`account` and `context`, as Connect's do.

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
import operator
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from roleferry.sandbox import stripe_objects as objects
from roleferry.sandbox.common import ProviderHTTPError, json_response, sandbox_of

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
ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,64}")
# What Stripe publishes for `GET /v1/events` (an event has nothing to expand).
EVENT_LIST_PARAMS = {
    "created",
    "delivery_success",
    "ending_before",
    "expand",
    "limit",
    "starting_after",
    "type",
    "types",
}


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


@dataclass
class StripeState:
    secret: str
    webhook_url: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[str, str, int, bytes, float]] = field(
        default_factory=dict
    )

    def visible(
        self, table: dict[str, dict[str, Any]], object_id: str, account: str | None
    ) -> dict[str, Any] | None:
        """The object if it belongs to the account the request acts for (None: the platform);
        another account's objects do not exist for it, as in Stripe."""
        obj = table.get(object_id)
        return obj if obj is not None and self.owners.get(object_id) == account else None

    def own(self, object_id: str, account: str | None) -> None:
        if account:
            self.owners[object_id] = account

    def adopt(self, child_id: str, parent_id: str) -> None:
        """An object made from another (a charge from its intent) belongs to the same account."""
        self.own(child_id, self.owners.get(parent_id))

    def sign(self, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        digest = hmac.new(
            self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        return {
            "Stripe-Signature": f"t={timestamp},v1={digest}",
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }


class StripeSimulator:
    """Payment state changes, and the events each change emits."""

    def __init__(self, request: Request) -> None:
        self.sandbox = sandbox_of(request)
        self.state: StripeState = self.sandbox.stripe

    def emit(self, type_: str, obj: dict[str, Any], idempotency_key: str | None = None) -> None:
        account = self.state.owners.get(obj["id"])
        event = objects.event(type_, json.loads(json.dumps(obj)), idempotency_key, account)
        self.state.events[event["id"]] = event
        self.state.own(event["id"], account)
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

    def pay(self, intent: dict[str, Any], payment_method: str, succeeds: bool) -> None:
        if succeeds:
            charge = objects.charge(intent, payment_method)
            self.state.charges[charge["id"]] = charge
            self.state.adopt(charge["id"], intent["id"])
            intent.update(
                status="succeeded",
                amount_received=intent["amount"],
                latest_charge=charge["id"],
                payment_method=payment_method,
                last_payment_error=None,
            )
            self.emit("payment_intent.succeeded", intent)
            self.emit("charge.succeeded", charge)
        else:
            failed = objects.failed_charge(intent, payment_method)
            self.state.charges[failed["id"]] = failed
            self.state.adopt(failed["id"], intent["id"])
            intent.update(
                status="requires_payment_method",
                latest_charge=failed["id"],
                payment_method=None,
                last_payment_error=objects.declined_error(failed["id"]),
            )
            self.emit("charge.failed", failed)
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
        raise StripeError(401, f"Invalid API Key provided: {_masked(key)}")
    account = _account(request)
    if account is not None and not ACCOUNT_ID.fullmatch(account):
        raise StripeError(
            403,
            f"The provided key '{_masked(key)}' does not have access to account '{account}' (or "
            "that account does not exist). Application access may have been revoked.",
            code="account_invalid",
        )
    allowed, _, _ = sandbox.control["stripe"].window("second", PER_SECOND, 1.0).hit(key)
    if not allowed:
        raise StripeError(
            429,
            "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        )
    return key


def _masked(key: str) -> str:
    return f"{key[:8]}{'*' * 12}{key[-4:]}"


def _account(request: Request) -> str | None:
    """The connected account a request acts for (`Stripe-Context`, or the older
    `Stripe-Account`); None for the platform itself. `_authorize` has checked its form."""
    return request.headers.get("stripe-context") or request.headers.get("stripe-account")


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

    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise StripeError(400, "Invalid request: the body is not UTF-8 text.") from exc
    return parse_form(parse_qsl(text, keep_blank_values=True))


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
        price_id = None
        if "price" in item:
            if item["price"] not in PRICES:
                raise StripeError(
                    400,
                    f"No such price: '{item['price']}'",
                    code="resource_missing",
                    param=f"line_items[{i}][price]",
                )
            price_id = item["price"]
            amount, cur, name = PRICES[price_id]
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
        rows.append(objects.line_item(name, quantity, amount, cur, price_id))
    return total, currency or "usd", rows


def _query(request: Request) -> dict[str, Any]:
    return parse_form(list(request.query_params.multi_items()))


def _expanded(
    obj: dict[str, Any], params: dict[str, Any], expanders: dict[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    """Applies `expand[]`: each named field is replaced by the object (or list) it refers to;
    a field that cannot be expanded gets Stripe's 400."""
    wanted = params.get("expand") or []
    if not isinstance(wanted, list):
        wanted = [wanted]
    result = dict(obj)
    for name in wanted:
        if name not in expanders:
            raise StripeError(
                400, f"This property cannot be expanded ({name}).", param="expand", code=None
            )
        result[name] = expanders[name](obj.get(name))
    return result


def _missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _bool(value: Any, param: str) -> bool:
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise StripeError(
        400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param
    )


_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _created_filter(value: Any) -> Callable[[int], bool]:
    """`created=N` or `created[gt|gte|lt|lte]=N`, as every Stripe list takes it."""
    if not isinstance(value, dict):
        exact = _int(value, "created")
        return lambda created: created == exact
    bounds: list[tuple[Callable[[int, int], bool], int]] = []
    for op, bound in value.items():
        if op not in _COMPARISONS:
            raise StripeError(
                400,
                f"Received unknown parameter: created[{op}]",
                code="parameter_unknown",
                param=f"created[{op}]",
            )
        bounds.append((_COMPARISONS[op], _int(bound, f"created[{op}]")))
    return lambda created: all(compare(created, limit) for compare, limit in bounds)


def _type_matcher(params: dict[str, Any]) -> Callable[[str], bool]:
    """`type` (one name, `*` matching any part: `charge.*`) or `types[]` (up to 20 names)."""
    if "type" in params and "types" in params:
        raise StripeError(
            400, "You may only specify one of these parameters: type, types.", param="types"
        )
    if "types" in params:
        names = params["types"] if isinstance(params["types"], list) else [params["types"]]
        if len(names) > 20:
            raise StripeError(400, "You may pass at most 20 event types in types[].", param="types")
        wanted = set(names)
        return lambda type_: type_ in wanted
    if "type" in params:
        pattern = re.compile(
            "^"
            + r"\.".join(".+" if p == "*" else re.escape(p) for p in params["type"].split("."))
            + "$"
        )
        return lambda type_: bool(pattern.match(type_))
    return lambda _type: True


def _page_of(
    rows: list[dict[str, Any]], params: dict[str, Any], url: str, kind: str
) -> dict[str, Any]:
    """A page of `rows` (newest first) by `limit`, `starting_after` and `ending_before`."""
    limit = _int(params.get("limit", 10), "limit", 1)
    if limit > 100:
        raise StripeError(
            400,
            "This value must be less than or equal to 100.",
            code="parameter_invalid_integer",
            param="limit",
        )
    if "starting_after" in params and "ending_before" in params:
        raise StripeError(
            400,
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="ending_before",
        )
    ids = [row["id"] for row in rows]
    for cursor in ("starting_after", "ending_before"):
        if cursor in params and params[cursor] not in ids:
            raise _missing(kind, str(params[cursor]), cursor)
    if "starting_after" in params:
        start = ids.index(params["starting_after"]) + 1
        page = rows[start : start + limit]
        has_more = start + limit < len(rows)
    elif "ending_before" in params:
        end = ids.index(params["ending_before"])
        page = rows[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        page, has_more = rows[:limit], len(rows) > limit
    return objects.list_object(page, url, has_more)


def router() -> APIRouter:
    api = APIRouter(prefix="/stripe")

    def session_of(request: Request, session_id: str) -> dict[str, Any]:
        state = sandbox_of(request).stripe
        session = state.visible(state.sessions, session_id, _account(request))
        if session is None:
            raise _missing("checkout.session", session_id)
        return session

    def session_view(request: Request, session: dict[str, Any], params: dict[str, Any]) -> Any:
        state = sandbox_of(request).stripe
        return _expanded(
            _public_session(session),
            params,
            {
                "line_items": lambda _v: objects.list_object(
                    session["_items"], f"/v1/checkout/sessions/{session['id']}/line_items"
                ),
                "payment_intent": lambda v: state.intents.get(v) if v else None,
            },
        )

    def charge_view(request: Request, charge: dict[str, Any], params: dict[str, Any]) -> Any:
        state = sandbox_of(request).stripe
        return _expanded(
            charge,
            params,
            {
                "refunds": lambda _v: objects.list_object(
                    [r for r in reversed(state.refunds.values()) if r["charge"] == charge["id"]],
                    f"/v1/charges/{charge['id']}/refunds",
                ),
                "payment_intent": lambda v: state.intents.get(v) if v else None,
            },
        )

    def intent_view(request: Request, intent: dict[str, Any], params: dict[str, Any]) -> Any:
        state = sandbox_of(request).stripe
        return _expanded(
            intent, params, {"latest_charge": lambda v: state.charges.get(v) if v else None}
        )

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
            ui_mode = params.get("ui_mode", "hosted_page")
            hosted = ui_mode in ("hosted", "hosted_page")
            if hosted and not params.get("success_url"):
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
            sid = objects.new_id("cs")
            session = objects.checkout_session(
                sid,
                mode=mode,
                ui_mode=ui_mode,
                amount=total,
                currency=currency,
                params=params,
                url=str(request.url_for("pay_page", session_id=sid)) if hosted else None,
                expires_at=_int(params.get("expires_at", int(time.time()) + 86400), "expires_at"),
            )
            session["_items"] = rows
            session["_intent_metadata"] = dict(
                (params.get("payment_intent_data") or {}).get("metadata") or {}
            )
            sim.state.sessions[sid] = session
            sim.state.own(sid, _account(request))
            return json_response(
                session_view(request, session, params),
                headers={"request-id": "req_" + secrets.token_hex(7)},
            )

        return await _idempotent(request, key, handle)

    @api.get("/v1/checkout/sessions")
    async def list_sessions(request: Request) -> JSONResponse:
        """Newest first, filtered by `status` and `payment_intent` like Stripe's."""
        _authorize(request)
        params = _query(request)
        rows = [
            session_view(request, session, {})
            for session in reversed(sandbox_of(request).stripe.sessions.values())
            if params.get("status", session["status"]) == session["status"]
            and params.get("payment_intent", session["payment_intent"]) == session["payment_intent"]
        ]
        return json_response(_page_of(rows, params, "/v1/checkout/sessions", "checkout.session"))

    @api.get("/v1/checkout/sessions/{session_id}")
    async def get_session(request: Request, session_id: str) -> JSONResponse:
        _authorize(request)
        session = session_of(request, session_id)
        return json_response(session_view(request, session, _query(request)))

    @api.get("/v1/checkout/sessions/{session_id}/line_items")
    async def get_session_line_items(request: Request, session_id: str) -> JSONResponse:
        _authorize(request)
        session = session_of(request, session_id)
        url = f"/v1/checkout/sessions/{session_id}/line_items"
        rows = list(reversed(session["_items"]))
        return json_response(_page_of(rows, _query(request), url, "line_item"))

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
            intent = objects.payment_intent(
                amount,
                str(params["currency"]).lower(),
                params.get("metadata") or {},
                params.get("description"),
            )
            sim.state.intents[intent["id"]] = intent
            sim.state.own(intent["id"], _account(request))
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
                sim.pay(intent, objects.new_id("pm"), succeeds=method == "pm_card_visa")
                if intent["status"] != "succeeded":
                    raise StripeError(
                        402,
                        "Your card was declined.",
                        type_="card_error",
                        code="card_declined",
                        extra={"decline_code": "generic_decline", "payment_intent": intent},
                    )
            return json_response(intent_view(request, intent, params))

        return await _idempotent(request, key, handle)

    @api.get("/v1/payment_intents/{intent_id}")
    async def get_intent(request: Request, intent_id: str) -> JSONResponse:
        _authorize(request)
        state = sandbox_of(request).stripe
        intent = state.visible(state.intents, intent_id, _account(request))
        if intent is None:
            raise _missing("payment_intent", intent_id, "intent")
        return json_response(intent_view(request, intent, _query(request)))

    @api.get("/v1/charges/{charge_id}")
    async def get_charge(request: Request, charge_id: str) -> JSONResponse:
        _authorize(request)
        state = sandbox_of(request).stripe
        charge = state.visible(state.charges, charge_id, _account(request))
        if charge is None:
            raise _missing("charge", charge_id)
        return json_response(charge_view(request, charge, _query(request)))

    @api.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        key = _authorize(request)

        async def handle() -> Response:
            params = await _form(request)
            sim = StripeSimulator(request)
            state = sim.state
            account = _account(request)
            charge = None
            if params.get("charge"):
                charge = state.visible(state.charges, params["charge"], account)
                if charge is None:
                    raise _missing("charge", params["charge"], "charge")
            elif params.get("payment_intent"):
                intent = state.visible(state.intents, params["payment_intent"], account)
                if intent is None:
                    raise _missing("payment_intent", params["payment_intent"], "payment_intent")
                charge = state.charges.get(intent["latest_charge"] or "")
                if charge is None or charge["status"] != "succeeded":
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
            if charge["status"] != "succeeded":
                raise StripeError(
                    400,
                    f"Charge {charge['id']} has failed and cannot be refunded.",
                    code="charge_not_refundable",
                    param="charge",
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
            refund = objects.refund(
                charge, amount, params.get("reason"), params.get("metadata") or {}
            )
            state.refunds[refund["id"]] = refund
            state.adopt(refund["id"], charge["id"])
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            sim.emit("refund.created", refund)
            sim.emit("charge.refunded", charge)
            return json_response(refund)

        return await _idempotent(request, key, handle)

    @api.get("/v1/refunds/{refund_id}")
    async def get_refund(request: Request, refund_id: str) -> JSONResponse:
        _authorize(request)
        state = sandbox_of(request).stripe
        refund = state.visible(state.refunds, refund_id, _account(request))
        if refund is None:
            raise _missing("refund", refund_id)
        return json_response(refund)

    @api.get("/v1/events")
    async def list_events(request: Request) -> JSONResponse:
        _authorize(request)
        params = _query(request)
        unknown = sorted(params.keys() - EVENT_LIST_PARAMS)
        if unknown:
            raise StripeError(
                400,
                f"Received unknown parameter: {unknown[0]}",
                code="parameter_unknown",
                param=unknown[0],
            )
        _expanded({}, params, {})
        matches_type = _type_matcher(params)
        in_range = _created_filter(params["created"]) if "created" in params else None
        delivered = (
            _bool(params["delivery_success"], "delivery_success")
            if "delivery_success" in params
            else None
        )
        account = _account(request)
        rows = [
            event
            for event in reversed(sandbox_of(request).stripe.events.values())
            if event.get("account") == account
            and matches_type(event["type"])
            and (in_range is None or in_range(event["created"]))
            and (delivered is None or (event["pending_webhooks"] == 0) == delivered)
        ]
        return json_response(_page_of(rows, params, "/v1/events", "event"))

    @api.get("/v1/events/{event_id}")
    async def get_event(request: Request, event_id: str) -> JSONResponse:
        _authorize(request)
        state = sandbox_of(request).stripe
        event = state.visible(state.events, event_id, _account(request))
        if event is None:
            raise _missing("event", event_id)
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
            intent = objects.payment_intent(
                session["amount_total"],
                session["currency"],
                session["_intent_metadata"],
                automatic_payment_methods=False,
            )
            sim.state.intents[intent["id"]] = intent
            sim.state.adopt(intent["id"], session["id"])
            session["payment_intent"] = intent["id"]
        sim.pay(intent, objects.new_id("pm"), succeeds=card == CARD_OK)
        if intent["status"] != "succeeded":
            note = "<p class=err>Your card was declined.</p>"
            return HTMLResponse(_page("Pay", note + _pay_form(session)), status_code=402)
        objects.complete_session(session, intent["id"])
        sim.emit("checkout.session.completed", _public_session(session))
        target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)
        return RedirectResponse(target, status_code=303)

    return api


def _pay_later(sim: StripeSimulator, session: dict[str, Any], *, succeeds: bool) -> Response:
    """A delayed payment method: the session completes unpaid now and settles a moment later."""
    intent = objects.payment_intent(
        session["amount_total"],
        session["currency"],
        session["_intent_metadata"],
        automatic_payment_methods=False,
    )
    intent["status"] = "processing"
    sim.state.intents[intent["id"]] = intent
    sim.state.adopt(intent["id"], session["id"])
    objects.complete_session(session, intent["id"])
    session["payment_status"] = "unpaid"
    sim.emit("checkout.session.completed", _public_session(session))

    def settle() -> None:
        sim.pay(intent, objects.new_id("pm"), succeeds=succeeds)
        if succeeds:
            session["payment_status"] = "paid"
            sim.emit("checkout.session.async_payment_succeeded", _public_session(session))
        else:
            sim.emit("checkout.session.async_payment_failed", _public_session(session))

    asyncio.get_running_loop().call_later(ASYNC_SETTLE_S, settle)
    target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
    return RedirectResponse(target, status_code=303)


def _public_session(session: dict[str, Any]) -> dict[str, Any]:
    """The session without the simulator's own bookkeeping (keys starting with `_`)."""
    return {k: v for k, v in session.items() if not k.startswith("_")}


def _pay_form(session: dict[str, Any]) -> str:
    rows = "".join(
        f"<li>{html.escape(r['description'])} x {r['quantity']}: {r['amount_total'] / 100:.2f}</li>"
        for r in session["_items"]
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
