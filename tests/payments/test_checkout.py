"""Checkout end to end: our API, the official SDK, the Stripe simulator's hosted page and its
signed webhooks, on a live server. Credits are granted once per session whoever fulfils it
(webhook, success page, reconciliation), declines and delayed payments are recorded, refunds
take back their share, a dropped webhook is reconciled, and Stripe hanging is a 503 in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.payments.models import CreditEntry, Payment
from roleferry.users import service as users
from tests.support.live_server import LiveServer, live_server
from tests.support.waiting import wait_for
from tests.support.webhooks import in_db

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_LATER_OK = "4000000000001000"
CARD_LATER_FAILS = "4000000000001018"
START = 200


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path, stripe_rate_limit="1000/1") as server:
        server.control("stripe", duplicate_rate=0.0)
        yield server


def checkout(live: LiveServer, pack: str = "small", key: str | None = None) -> dict[str, Any]:
    headers = {**live.auth, **({"Idempotency-Key": key} if key else {})}
    response = httpx.post(
        f"{live.url}/api/v1/checkout", json={"pack": pack}, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def pay(live: LiveServer, session_id: str, card: str) -> int:
    response = httpx.post(
        f"{live.url}/sandbox/stripe/pay/{session_id}", data={"card_number": card}, timeout=10
    )
    return response.status_code


def available(live: LiveServer) -> int:
    response = httpx.get(f"{live.url}/api/v1/credits", headers=live.auth, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["available"])


def purchases(live: LiveServer) -> int:
    async def count(session: AsyncSession) -> int:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(CreditEntry)
                .where(CreditEntry.reason == "purchase")
            )
            or 0
        )

    return in_db(live.runtime.settings.database_url, count)


def payment_rows(live: LiveServer) -> list[tuple[str | None, str | None, str, str | None]]:
    async def rows(session: AsyncSession) -> list[tuple[str | None, str | None, str, str | None]]:
        found = await session.scalars(select(Payment).order_by(Payment.id))
        return [(p.checkout_session_id, p.payment_intent_id, p.status, p.failure) for p in found]

    return in_db(live.runtime.settings.database_url, rows)


def confirm(live: LiveServer, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{live.url}/api/v1/checkout/{session_id}", headers=live.auth, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_paid_checkout_is_granted_once_by_webhook_and_success_page_together(
    live: LiveServer,
) -> None:
    """Eight success-page calls race the webhook: 100 credits, one purchase entry."""
    race_webhook_and_success_page(live)


def test_the_same_race_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The webhook and the success page at the same moment, on PostgreSQL: granted once."""
    with live_server(tmp_path, database_url=postgres_url, stripe_rate_limit="1000/1") as live:
        live.control("stripe", duplicate_rate=1.0)
        race_webhook_and_success_page(live)


def test_the_scheduled_reconciliation_finds_a_dropped_webhook(tmp_path: Path) -> None:
    """No admin call: the server's own schedule lists the undelivered event and grants it."""
    with live_server(tmp_path, reconcile_interval_s=0.5, stripe_rate_limit="1000/1") as live:
        live.control("stripe", drop_events=["checkout.session.completed"], duplicate_rate=0.0)
        made = checkout(live)
        assert pay(live, made["session_id"], CARD_OK) == 303
        wait_for(lambda: available(live) == START + 100)
        assert purchases(live) == 1


def race_webhook_and_success_page(live: LiveServer) -> None:
    made = checkout(live)
    assert made["url"].startswith(f"{live.url}/sandbox/stripe/pay/cs_")
    assert available(live) == START
    assert pay(live, made["session_id"], CARD_OK) == 303
    outcomes: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: outcomes.append(confirm(live, made["session_id"])["outcome"])
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: available(live) == START + 100)
    time.sleep(1)
    assert available(live) == START + 100
    assert purchases(live) == 1
    assert sum(o == "credited 100" for o in outcomes) <= 1
    ledger = httpx.get(f"{live.url}/api/v1/credits/ledger", headers=live.auth).json()
    purchase = next(e for e in ledger["entries"] if e["reason"] == "purchase")
    assert purchase["postings"] == {"available": 100, "purchases": -100}


def test_the_same_idempotency_key_gives_the_same_session(live: LiveServer) -> None:
    """A retried request with its key gets the first session back; a new key, a new one."""
    first = checkout(live, key="order-1")
    again = checkout(live, key="order-1")
    other = checkout(live, key="order-2")
    assert first["session_id"] == again["session_id"]
    assert other["session_id"] != first["session_id"]


def test_unknown_pack_is_a_404_that_lists_the_packs(live: LiveServer) -> None:
    """A pack that is not on sale names the ones that are."""
    response = httpx.post(f"{live.url}/api/v1/checkout", json={"pack": "huge"}, headers=live.auth)
    assert response.status_code == 404
    assert response.json()["error"]["details"] == {"packs": ["large", "medium", "small"]}


def test_declined_card_is_recorded_then_a_good_card_pays_once(live: LiveServer) -> None:
    """The decline is recorded on the intent's row; paying the same session with a good card
    links session and intent, and the two rows merge into one, credited once."""
    made = checkout(live)
    assert pay(live, made["session_id"], CARD_DECLINED) == 402
    wait_for(lambda: any(row[2] == "failed" for row in payment_rows(live)))
    assert confirm(live, made["session_id"])["payment_status"] == "unpaid"
    assert pay(live, made["session_id"], CARD_OK) == 303
    wait_for(lambda: available(live) == START + 100)
    wait_for(lambda: len(payment_rows(live)) == 1 and payment_rows(live)[0][2] == "paid")
    session_id, intent_id, _status, failure = payment_rows(live)[0]
    assert session_id == made["session_id"]
    assert intent_id is not None
    assert failure == "Your card was declined."
    assert purchases(live) == 1


def test_delayed_payment_is_granted_when_it_succeeds(live: LiveServer) -> None:
    """Completed unpaid: nothing yet; async_payment_succeeded: granted."""
    made = checkout(live, pack="medium")
    assert pay(live, made["session_id"], CARD_LATER_OK) == 303
    first = confirm(live, made["session_id"])
    assert first["outcome"].endswith("awaiting payment") or first["payment_status"] == "paid"
    wait_for(lambda: available(live) == START + 500)
    assert purchases(live) == 1


def test_delayed_payment_that_fails_is_recorded_and_grants_nothing(live: LiveServer) -> None:
    """async_payment_failed marks the payment failed; no credits."""
    made = checkout(live)
    assert pay(live, made["session_id"], CARD_LATER_FAILS) == 303
    wait_for(lambda: any(row[2] == "failed" for row in payment_rows(live)))
    assert available(live) == START
    assert purchases(live) == 0


def test_a_refund_takes_back_its_share(live: LiveServer) -> None:
    """Half the price refunded: half the credits taken back, once."""
    made = checkout(live)
    assert pay(live, made["session_id"], CARD_OK) == 303
    wait_for(lambda: available(live) == START + 100)
    intent = payment_rows(live)[0][1]
    wait_for(lambda: payment_rows(live)[0][1])
    intent = payment_rows(live)[0][1]
    response = httpx.post(
        f"{live.url}/sandbox/stripe/v1/refunds",
        data={"payment_intent": intent, "amount": "500"},
        headers={"Authorization": "Bearer sk_test_sandbox"},
    )
    assert response.status_code == 200, response.text
    wait_for(lambda: available(live) == START + 50)
    wait_for(lambda: payment_rows(live)[0][2] == "partially_refunded")


def admin_key(live: LiveServer) -> str:
    async def admin(session: AsyncSession) -> str:
        return (await users.create_user(session, "admin@example.com", is_admin=True)).key.raw

    return in_db(live.runtime.settings.database_url, admin)


def admin_reconcile(live: LiveServer, key: str) -> dict[str, Any]:
    response = httpx.post(
        f"{live.url}/api/v1/admin/payments/reconcile",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_dropped_webhook_is_reconciled(live: LiveServer) -> None:
    """checkout.session.completed never delivered: reconciliation finds it among the
    undelivered events and grants it, once even when run twice."""
    live.control("stripe", drop_events=["checkout.session.completed"], duplicate_rate=0.0)
    key = admin_key(live)
    made = checkout(live)
    assert pay(live, made["session_id"], CARD_OK) == 303
    time.sleep(1)
    assert available(live) == START
    for _ in range(2):
        assert admin_reconcile(live, key)["events_found"] >= 1
    wait_for(lambda: available(live) == START + 100)
    assert purchases(live) == 1


def test_a_checkout_left_open_is_fetched_from_stripe_and_granted(tmp_path: Path) -> None:
    """No webhook came for a paid checkout still open here past `reconcile_after_s`:
    reconciliation fetches the session itself and grants it; the undelivered event it then
    lists grants nothing more."""
    with live_server(tmp_path, reconcile_after_s=0.2, stripe_rate_limit="1000/1") as live:
        live.control("stripe", drop_events=["checkout.session.completed"], duplicate_rate=0.0)
        made = checkout(live)
        assert pay(live, made["session_id"], CARD_OK) == 303
        key = admin_key(live)
        time.sleep(0.5)
        report = admin_reconcile(live, key)
        assert report["sessions_checked"] == 1
        assert f"{made['session_id']}: credited 100" in report["outcomes"]
        assert available(live) == START + 100
        again = admin_reconcile(live, key)
        assert again["sessions_checked"] == 0
        wait_for(lambda: payment_rows(live)[0][2] == "paid")
        assert available(live) == START + 100
        assert purchases(live) == 1


def test_stripe_hanging_is_a_503_within_the_deadline(tmp_path: Path) -> None:
    """No answer from Stripe: 503 with Retry-After and a message saying so, in time."""
    with live_server(tmp_path, checkout_deadline_s=1.5, attempt_timeout_s=0.5) as live:
        live.control("stripe", hang=True)
        started = time.monotonic()
        response = httpx.post(
            f"{live.url}/api/v1/checkout", json={"pack": "small"}, headers=live.auth, timeout=10
        )
        elapsed = time.monotonic() - started
        live.control("stripe", hang=False)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert "Stripe is not answering" in response.json()["error"]["message"]
    assert elapsed < 3.0


def test_a_checkout_that_is_not_yours_or_does_not_exist_is_404(live: LiveServer) -> None:
    """Another user's session and a session Stripe does not know: 404 not_found, no grant."""
    made = checkout(live)
    other = live.new_user("other@example.com")
    for session_id, key in ((made["session_id"], other), ("cs_test_nothere", live.key)):
        response = httpx.get(
            f"{live.url}/api/v1/checkout/{session_id}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    malformed = httpx.get(f"{live.url}/api/v1/checkout/not-a-session", headers=live.auth)
    assert malformed.status_code == 422


def stripe_sessions(live: LiveServer) -> list[str]:
    """Every Checkout Session the simulator holds, newest first."""
    listed = httpx.get(
        f"{live.url}/sandbox/stripe/v1/checkout/sessions",
        params={"limit": 100},
        headers={"Authorization": "Bearer sk_test_sandbox"},
        timeout=10,
    )
    assert listed.status_code == 200, listed.text
    return [s["id"] for s in listed.json()["data"]]


def post_checkout(
    live: LiveServer, key: str, pack: str = "small", auth: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/checkout",
        json={"pack": pack},
        headers={**(auth or live.auth), "Idempotency-Key": key},
        timeout=10,
    )


def test_a_retry_after_stripe_s_answer_was_lost_gets_the_session_it_made(
    tmp_path: Path,
) -> None:
    """Stripe makes the session but its answers never arrive: 503. The client retries with
    its key: the session Stripe made then, not a second one; a third try is answered from our
    own record without asking Stripe."""
    with live_server(
        tmp_path, checkout_deadline_s=1.5, attempt_timeout_s=0.5, stripe_rate_limit="1000/1"
    ) as live:
        live.control("stripe", lose_next=20, duplicate_rate=0.0)
        lost = post_checkout(live, "order-lost")
        assert lost.status_code == 503, lost.text
        assert "Stripe is not answering" in lost.json()["error"]["message"]
        live.control("stripe", lose_next=0)
        made = stripe_sessions(live)
        assert len(made) == 1
        retried = post_checkout(live, "order-lost")
        assert retried.status_code == 201, retried.text
        assert retried.json()["session_id"] == made[0]
        assert retried.json()["url"].endswith(f"/sandbox/stripe/pay/{made[0]}")
        calls = live.calls("stripe")
        again = post_checkout(live, "order-lost")
        assert again.status_code == 201
        assert again.json() == retried.json()
        assert live.calls("stripe") == calls
        assert stripe_sessions(live) == made


def test_a_retry_after_stripe_failed_makes_one_session(tmp_path: Path) -> None:
    """Stripe answers 500 to every attempt: 503, nothing made; the retry with the same key
    makes the one session, and a retry of that the same."""
    with live_server(
        tmp_path, checkout_deadline_s=1.0, attempt_timeout_s=0.5, stripe_rate_limit="1000/1"
    ) as live:
        live.control("stripe", fail_next=50, error_status=500, duplicate_rate=0.0)
        failed = post_checkout(live, "order-500")
        assert failed.status_code == 503, failed.text
        assert int(failed.headers["Retry-After"]) >= 1
        live.control("stripe", fail_next=0)
        assert stripe_sessions(live) == []
        first = post_checkout(live, "order-500")
        assert first.status_code == 201, first.text
        second = post_checkout(live, "order-500")
        assert second.json()["session_id"] == first.json()["session_id"]
        assert stripe_sessions(live) == [first.json()["session_id"]]


def test_concurrent_requests_with_one_key_answer_one_session(live: LiveServer) -> None:
    """Six requests with one key at the same moment: every answer names the same session."""
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(post_checkout(live, "order-race")))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 6
    assert len({a.json()["session_id"] for a in answers}) == 1


def test_a_key_reused_with_another_body_is_a_409_naming_the_first(live: LiveServer) -> None:
    """The key of a small-pack checkout sent for a medium one: 409 that says so; the first
    request repeated still gets its session."""
    first = post_checkout(live, "order-9", pack="small")
    assert first.status_code == 201
    other = post_checkout(live, "order-9", pack="medium")
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "conflict"
    assert "'order-9'" in error["message"]
    assert "'small'" in error["message"]
    assert error["details"] == {"idempotency_key": "order-9", "pack": "small"}
    assert post_checkout(live, "order-9").json()["session_id"] == first.json()["session_id"]


def test_one_key_from_two_users_is_two_checkouts(live: LiveServer) -> None:
    """Keys are the user's own: another user's same key makes a session of its own."""
    mine = post_checkout(live, "order-1")
    other = {"Authorization": f"Bearer {live.new_user('other@example.com')}"}
    theirs = post_checkout(live, "order-1", auth=other)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["session_id"] != theirs.json()["session_id"]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is empty"),
        ("has space", "has ' ' at position 4"),
        ("x" * 201, "has 201 characters"),
        ("naïve", "has '\\xc3' at position 3"),
    ],
)
def test_a_malformed_idempotency_key_is_a_422_that_says_what_to_send(
    live: LiveServer, key: str, problem: str
) -> None:
    """Nothing is sent to Stripe; the message says what is wrong and what a key looks like."""
    response = httpx.post(
        f"{live.url}/api/v1/checkout",
        json={"pack": "small"},
        headers={**live.auth, "Idempotency-Key": key.encode()},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(f"Idempotency-Key {problem}")
    assert "1 to 200 printable ASCII characters" in message
    assert stripe_sessions(live) == []
