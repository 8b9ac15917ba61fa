"""The Stripe simulator answers as Stripe publishes: every object of every route, success and
error, checked field by field against the installed `stripe` SDK's types (generated from
Stripe's OpenAPI description), and `GET /v1/events` filtered and paged as Stripe does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from stripe._request_options import RequestOptions
from stripe.params import EventListParams

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.contracts import stripe_sdk
from tests.support.sandbox_server import SandboxServer

KEY = SANDBOX_API_KEYS["stripe"]
SESSION = {
    "mode": "payment",
    "line_items[0][price]": "price_credits_100",
    "line_items[0][quantity]": "2",
    "line_items[1][price_data][currency]": "usd",
    "line_items[1][price_data][unit_amount]": "700",
    "line_items[1][price_data][product_data][name]": "Setup",
    "success_url": "https://app.example.com/paid?cs={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://app.example.com/pricing",
    "client_reference_id": "user_42",
    "metadata[plan]": "pro",
}


def _until_delivered(sb: SandboxServer) -> None:
    """Waits until every event's delivery is acknowledged (`pending_webhooks` 0)."""
    deadline = time.monotonic() + 10
    while any(e["pending_webhooks"] for e in sb.sandbox.stripe.events.values()):
        assert time.monotonic() < deadline, "events still pending delivery"
        time.sleep(0.05)


class Recorder:
    """Talks HTTP to the Stripe simulator and keeps every JSON answer, by what it is."""

    def __init__(self, sb: SandboxServer) -> None:
        self.http = httpx.Client(base_url=sb.base("stripe"), auth=(KEY, ""), timeout=10)
        self.objects: list[tuple[str, dict[str, Any]]] = []
        self.lists: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[tuple[str, int, dict[str, Any]]] = []

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == expect, (path, response.status_code, response.text)
        body: dict[str, Any] = response.json()
        route = f"{method} {path.split('?')[0]}"
        if expect >= 400:
            self.errors.append((route, expect, body))
        elif body["object"] == "list":
            self.lists.append((route, body))
        else:
            self.objects.append((route, body))
        return body


@pytest.fixture(scope="module")
def recorded(sandbox_server: SandboxServer) -> Iterator[Recorder]:
    """Every Stripe route exercised once, success and error, with the answers kept."""
    sb = sandbox_server
    httpx.post(f"{sb.url}/sandbox/_control/reset").raise_for_status()
    sb.control("stripe", duplicate_rate=0.0, rate_limit=10_000)
    sb.caught.clear()
    rec = Recorder(sb)
    session = rec.call("POST", "/v1/checkout/sessions", data=SESSION)
    rec.call("POST", "/v1/checkout/sessions", data={**SESSION, "expand[]": "line_items"})
    paid = httpx.post(session["url"], data={"card_number": "4242 4242 4242 4242"})
    assert paid.status_code == 303
    sid = session["id"]
    done = rec.call("GET", f"/v1/checkout/sessions/{sid}")
    rec.call("GET", f"/v1/checkout/sessions/{sid}", params={"expand[]": "payment_intent"})
    rec.call("GET", f"/v1/checkout/sessions/{sid}/line_items", params={"limit": 1})
    listed = rec.call("GET", "/v1/checkout/sessions", params={"limit": 1, "status": "complete"})
    assert [s["id"] for s in listed["data"]] == [sid]
    intent = rec.call(
        "GET", f"/v1/payment_intents/{done['payment_intent']}", params={"expand[]": "latest_charge"}
    )
    charge_id = intent["latest_charge"]["id"]
    rec.call("POST", "/v1/payment_intents", data={"amount": "900", "currency": "usd"})
    confirmed = rec.call(
        "POST",
        "/v1/payment_intents",
        data={
            "amount": "5000",
            "currency": "usd",
            "confirm": "true",
            "payment_method": "pm_card_visa",
        },
    )
    refund = rec.call(
        "POST", "/v1/refunds", data={"payment_intent": confirmed["id"], "amount": "1200"}
    )
    rec.call("GET", f"/v1/refunds/{refund['id']}")
    rec.call("POST", "/v1/refunds", data={"charge": charge_id, "reason": "requested_by_customer"})
    rec.call("GET", f"/v1/charges/{charge_id}")
    rec.call("GET", f"/v1/charges/{charge_id}", params={"expand[]": "refunds"})
    rec.call(
        "POST",
        "/v1/payment_intents",
        expect=402,
        data={
            "amount": "5000",
            "currency": "usd",
            "confirm": "true",
            "payment_method": "pm_card_chargeDeclined",
        },
    )
    declined = next(
        i for i in sb.sandbox.stripe.intents.values() if i["last_payment_error"] is not None
    )
    rec.call("GET", f"/v1/payment_intents/{declined['id']}")
    connected = {"Stripe-Account": "acct_1Contract"}
    rec.call(
        "POST",
        "/v1/payment_intents",
        headers=connected,
        data={
            "amount": "3000",
            "currency": "usd",
            "confirm": "true",
            "payment_method": "pm_card_visa",
        },
    )
    sb.wait_for("stripe", 12)
    _until_delivered(sb)
    events = rec.call("GET", "/v1/events", params={"limit": 100})
    for event in events["data"]:
        rec.call("GET", f"/v1/events/{event['id']}")
    for event in rec.call("GET", "/v1/events", headers=connected)["data"]:
        rec.call("GET", f"/v1/events/{event['id']}", headers=connected)
    rec.call("GET", "/v1/checkout/sessions/cs_test_nope", expect=404)
    rec.call("GET", "/v1/payment_intents/pi_test_nope", expect=404)
    rec.call("GET", "/v1/charges/ch_test_nope", expect=404)
    rec.call("GET", "/v1/refunds/re_test_nope", expect=404)
    rec.call("GET", "/v1/events/evt_test_nope", expect=404)
    rec.call("POST", "/v1/checkout/sessions", expect=400, data={})
    rec.call("POST", "/v1/payment_intents", expect=400, data={"currency": "usd"})
    rec.call("POST", "/v1/refunds", expect=400, data={})
    rec.call("GET", "/v1/events", expect=400, params={"limit": 101})
    rec.call("GET", "/v1/charges/" + charge_id, expect=400, params={"expand[]": "customer_x"})
    rec.call("GET", "/v1/nope", expect=404)
    rec.call("DELETE", "/v1/events", expect=405)
    rec.call("GET", "/v1/events", expect=401, auth=("sk_test_wrong", ""))
    rec.call("GET", "/v1/events", expect=403, headers={"Stripe-Account": "acct-bad"})
    sb.control("stripe", rate_limit="1/60")
    rec.call("GET", "/v1/events", params={"limit": 1})
    rec.call("GET", "/v1/events", expect=429)
    httpx.post(f"{sb.url}/sandbox/_control/reset").raise_for_status()
    yield rec
    rec.http.close()


@pytest.mark.parametrize(
    "kind", ["checkout.session", "payment_intent", "charge", "refund", "event"]
)
def test_every_published_field_is_present_with_its_type(recorded: Recorder, kind: str) -> None:
    """Each answer of each kind carries 100% of the fields Stripe returns by default, each of
    the SDK's type, and no field Stripe does not publish; across the answers, ≥ 95% of every
    published field appears (the conditional ones where Stripe sends them)."""
    seen = [obj for _, obj in recorded.objects if obj["object"] == kind]
    seen += [e["data"]["object"] for _, e in recorded.objects if e["object"] == "event"]
    seen = [obj for obj in seen if obj["object"] == kind]
    assert seen, f"no {kind} was returned"
    typed: set[str] = set()
    for obj in seen:
        cov = stripe_sdk.coverage(obj)
        assert cov.errors == [], cov
        assert cov.unknown == [], cov
        assert cov.missing == [], cov
        assert cov.ratio == 1.0
        typed |= set(cov.typed)
    assert len(typed) / len(stripe_sdk.published(stripe_sdk.OBJECTS[kind])) >= 0.95, typed


def test_connected_account_events_carry_account_and_context(recorded: Recorder) -> None:
    """Events of a connected account carry all 11 published Event fields, `account` and
    `context` naming the account; the platform's own events carry neither, as Stripe's."""
    events = [obj for _, obj in recorded.objects if obj["object"] == "event"]
    connected = [e for e in events if "account" in e]
    assert {e["type"] for e in connected} == {"payment_intent.succeeded", "charge.succeeded"}
    for event in connected:
        assert stripe_sdk.coverage(event).raw_ratio == 1.0
        assert event["account"] == event["context"] == "acct_1Contract"
    platform = [e for e in events if "account" not in e]
    assert len(platform) > len(connected)
    assert all("context" not in e for e in platform)


def test_expanded_fields_and_lists_have_stripes_shape(recorded: Recorder) -> None:
    """Expanded line items, charges, intents and refunds, and every list answer, check against
    the SDK: the list envelope is exactly object/data/has_more/url."""
    expanded = {
        route: obj
        for route, obj in recorded.objects
        if isinstance(obj.get("line_items") or obj.get("refunds") or obj.get("latest_charge"), dict)
    }
    assert len(expanded) == 3
    for _, obj in recorded.objects:
        cls = stripe_sdk.OBJECTS[obj["object"]]
        assert stripe_sdk.object_errors(obj, cls, obj["object"]) == []
    assert {body["data"][0]["object"] for _, body in recorded.lists} == {
        "checkout.session",
        "event",
        "item",
    }
    for route, body in recorded.lists:
        item = stripe_sdk.OBJECTS[body["data"][0]["object"]]
        assert stripe_sdk.type_errors(body, stripe.ListObject[item], route) == []  # type: ignore[valid-type]


def test_errors_have_stripes_error_object(recorded: Recorder) -> None:
    """400, 401, 402, 403, 404, 405 and 429 answers are `{"error": …}` with the SDK's
    ErrorObject fields and types; a declined card's error carries the PaymentIntent as Stripe's
    does."""
    assert {status for _, status, _ in recorded.errors} == {400, 401, 402, 403, 404, 405, 429}
    for route, _, body in recorded.errors:
        assert stripe_sdk.error_errors(body) == [], route
    declined = next(body for _, status, body in recorded.errors if status == 402)
    assert stripe_sdk.coverage(declined["error"]["payment_intent"]).missing == []


def test_snapshot_matches_the_installed_sdk() -> None:
    """tests/contracts/stripe/fields.json is what the installed SDK publishes; a new SDK
    version fails here until `make contracts` rewrites it and the diff is reviewed."""
    saved = json.loads(stripe_sdk.SNAPSHOT.read_text())
    assert saved == json.loads(json.dumps(stripe_sdk.snapshot()))


def test_checker_catches_drift() -> None:
    """The checker reports a missing field, a wrong type and an unknown field."""
    obj = dict.fromkeys(stripe_sdk.published(stripe.Refund))
    obj.update(object="refund", id="re_1", amount="12", created=1, currency="usd", extra=1)
    del obj["status"]
    cov = stripe_sdk.coverage(obj)
    assert cov.missing == ["status"]
    assert cov.unknown == ["extra"]
    assert cov.errors == ["refund.amount: str is not int"]


def test_events_list_takes_exactly_the_published_parameters(sb: SandboxServer) -> None:
    """Every parameter the SDK publishes for `GET /v1/events` is taken; any other is Stripe's
    400 `parameter_unknown` naming it, as is an `expand[]` (an event has nothing to expand)."""
    rec = Recorder(sb)
    pay = {"amount": "5000", "currency": "usd", "confirm": "true", "payment_method": "pm_card_visa"}
    rec.call("POST", "/v1/payment_intents", data=pay)
    sb.wait_for("stripe", 2)
    _until_delivered(sb)
    newer, older = (e["id"] for e in _events(rec))
    published = set(EventListParams.__annotations__) - set(RequestOptions.__annotations__)
    sample = {
        "created": ({"created[gte]": 1}, 2),
        "delivery_success": ({"delivery_success": "true"}, 2),
        "ending_before": ({"ending_before": older}, 1),
        "starting_after": ({"starting_after": newer}, 1),
        "limit": ({"limit": 1}, 1),
        "type": ({"type": "charge.*"}, 1),
        "types": ({"types[]": "charge.succeeded"}, 1),
    }
    assert set(sample) | {"expand"} == published
    for params, count in sample.values():
        assert len(_events(rec, **params)) == count, params
    for params, param in (({"customer": "cus_1"}, "customer"), ({"expand[]": "data"}, "expand")):
        error = rec.call("GET", "/v1/events", expect=400, params=params)["error"]
        assert error["param"] == param


def _events(rec: Recorder, **params: Any) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = rec.call("GET", "/v1/events", params=params)["data"]
    return data


def test_events_list_filters_and_pages(sb: SandboxServer) -> None:
    """`GET /v1/events` filters by type (with `*`), types[], created ranges and delivery
    success, pages newest first with limit/starting_after/ending_before, and refuses bad
    filters with Stripe's 400."""
    rec = Recorder(sb)
    for amount in ("5000", "6000"):
        rec.call(
            "POST",
            "/v1/payment_intents",
            data={
                "amount": amount,
                "currency": "usd",
                "confirm": "true",
                "payment_method": "pm_card_visa",
            },
        )
    sb.wait_for("stripe", 4)
    every = _events(rec, limit=100)
    assert len(every) == 4
    assert [e["id"] for e in every] == list(reversed(sb.sandbox.stripe.events))
    assert {e["type"] for e in _events(rec, type="charge.*")} == {"charge.succeeded"}
    assert len(_events(rec, type="payment_intent.succeeded")) == 2
    assert len(_events(rec, **{"types[]": ["charge.succeeded", "payment_intent.succeeded"]})) == 4
    created = every[0]["created"]
    assert len(_events(rec, **{"created[gte]": created, "created[lte]": created + 1})) >= 1
    assert _events(rec, **{"created[gt]": created + 5}) == []
    assert _events(rec, **{"created[lt]": created - 60}) == []
    first = rec.call("GET", "/v1/events", params={"limit": 3})
    assert first["has_more"] is True
    assert first["url"] == "/v1/events"
    rest = rec.call(
        "GET", "/v1/events", params={"limit": 3, "starting_after": first["data"][-1]["id"]}
    )
    assert rest["has_more"] is False
    assert [e["id"] for e in first["data"] + rest["data"]] == [e["id"] for e in every]
    before = _events(rec, ending_before=every[2]["id"])
    assert [e["id"] for e in before] == [e["id"] for e in every[:2]]
    deadline = time.monotonic() + 10
    while _events(rec, delivery_success="false"):
        assert time.monotonic() < deadline, "deliveries not acknowledged"
        time.sleep(0.05)
    assert len(_events(rec, delivery_success="true")) == 4
    assert all(e["pending_webhooks"] == 0 for e in _events(rec))
    bad = [
        ({"type": "charge.*", "types[]": "charge.succeeded"}, "types"),
        ({"limit": 0}, "limit"),
        ({"created[between]": 1}, "created[between]"),
        ({"delivery_success": "maybe"}, "delivery_success"),
    ]
    for params, param in bad:
        error = rec.call("GET", "/v1/events", expect=400, params=params)["error"]
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
    missing = rec.call("GET", "/v1/events", expect=404, params={"starting_after": "evt_nope"})
    assert missing["error"]["code"] == "resource_missing"
