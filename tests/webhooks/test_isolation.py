"""One bad webhook event never holds up the others, on SQLite and on PostgreSQL: whatever it
raises (a database error included) stays with it; it is retried with a doubling backoff a
bounded number of times, then parked as `failed` and replayable; values that cannot be stored
fail their event at once, with the reason."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.api.times import iso_z
from roleferry.outreach.models import Suppression
from roleferry.payments.models import CreditEntry
from roleferry.runtime import Runtime
from roleferry.webhooks.models import WebhookEvent
from tests.conftest import bearer, create_user, make_settings, start_client
from tests.support.webhooks import sendgrid_event, stripe_event
from tests.webhooks.test_inbox import count, db, post_sendgrid, post_stripe

POISON = "poison@example.com"
BACKOFF_S = 10.0
MAX_ATTEMPTS = 5

SQLITE_TRIGGER = [
    f"CREATE TRIGGER poison BEFORE INSERT ON suppressions WHEN NEW.email = '{POISON}' "
    "BEGIN SELECT RAISE(ABORT, 'poisoned for the test'); END"
]
POSTGRES_TRIGGER = [
    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF NEW.email = '{POISON}' THEN RAISE EXCEPTION 'poisoned for the test'; END IF; "
    "RETURN NEW; END $$",
    "CREATE TRIGGER poison BEFORE INSERT ON suppressions FOR EACH ROW EXECUTE FUNCTION poison()",
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/roleferry.sqlite"
    url: str = request.getfixturevalue("postgres_url")
    return url


def start(tmp_path: Path, database_url: str, **overrides: Any) -> TestClient:
    return start_client(make_settings(tmp_path, database_url=database_url, **overrides))


def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


@pytest.fixture
def driven(tmp_path: Path, engine: str) -> Iterator[tuple[TestClient, Clock]]:
    """An app whose processor the test runs by hand, on a clock it moves."""
    with start(
        tmp_path, engine, webhook_retry_backoff_s=BACKOFF_S, webhook_max_attempts=MAX_ATTEMPTS
    ) as client:
        inbox = runtime_of(client).inbox
        assert inbox is not None
        client.portal.call(inbox.stop)  # type: ignore[union-attr]
        clock = Clock()
        inbox.clock = clock
        yield client, clock


def run_batch(client: TestClient) -> int:
    inbox = runtime_of(client).inbox
    assert inbox is not None
    return client.portal.call(inbox.apply_batch)  # type: ignore[union-attr]


def sql(client: TestClient, statements: list[str]) -> None:
    async def go(session: AsyncSession) -> None:
        for statement in statements:
            await session.execute(text(statement))

    db(client, go)


def poison(client: TestClient) -> None:
    postgres = not runtime_of(client).db.urls.is_sqlite
    sql(client, POSTGRES_TRIGGER if postgres else SQLITE_TRIGGER)


def cure(client: TestClient) -> None:
    postgres = not runtime_of(client).db.urls.is_sqlite
    sql(client, [f"DROP TRIGGER poison{' ON suppressions' if postgres else ''}"])


def event_row(client: TestClient, event_id: str) -> WebhookEvent:
    async def go(session: AsyncSession) -> WebhookEvent:
        found = await session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
        assert found is not None
        return found

    return db(client, go)


def by_status(client: TestClient, status: str) -> int:
    return count(client, WebhookEvent, WebhookEvent.status == status)


def metric(client: TestClient, outcome: str, event_type: str) -> float:
    line = (
        f'roleferry_webhook_events_total{{outcome="{outcome}",provider="sendgrid",'
        f'type="{event_type}"}} '
    )
    found = re.search(re.escape(line) + r"([0-9.e+]+)", client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_a_failing_event_is_retried_with_backoff_then_parked_while_the_rest_flow(
    driven: tuple[TestClient, Clock],
) -> None:
    """A database error on one event (a trigger that raises for it) leaves the events around it
    applied; it is tried again only when its doubling backoff is over, `max_attempts` times in
    all, then parked as failed with the database's message; replayed once cured, it applies."""
    client, clock = driven
    poison(client)
    retried, failed = metric(client, "retried", "bounce"), metric(client, "failed", "bounce")
    bad = sendgrid_event("bounce", POISON)
    good = [sendgrid_event("bounce", f"good{i}@example.com") for i in range(20)]
    post_sendgrid(client, [bad, *good])
    assert run_batch(client) == 21
    assert by_status(client, "applied") == 20
    assert count(client, Suppression) == 20
    row = event_row(client, bad["sg_event_id"])
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.retry_at == clock.now + BACKOFF_S
    assert "poisoned for the test" in str(row.outcome)

    admin = bearer(create_user(client, "root@example.com", is_admin=True))
    listed = client.get(
        "/api/v1/admin/webhook-events", params={"status": "pending"}, headers=admin
    ).json()
    assert [(e["attempts"], e["retry_at"]) for e in listed] == [(1, iso_z(clock.now + BACKOFF_S))]
    for _ in range(5):
        assert run_batch(client) == 0, "not read again before its backoff is over"
    later = [sendgrid_event("bounce", f"later{i}@example.com") for i in range(5)]
    post_sendgrid(client, later)
    assert run_batch(client) == 5, "later events pass the waiting one"
    assert event_row(client, bad["sg_event_id"]).attempts == 1

    for attempt in range(2, MAX_ATTEMPTS + 1):
        row = event_row(client, bad["sg_event_id"])
        assert row.retry_at is not None
        clock.now = row.retry_at - 0.001
        assert run_batch(client) == 0
        clock.now = row.retry_at
        assert run_batch(client) == 1
        row = event_row(client, bad["sg_event_id"])
        assert row.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert row.status == "pending"
            assert row.retry_at == clock.now + BACKOFF_S * 2 ** (attempt - 1)
    assert (row.status, row.retry_at) == ("failed", None)
    assert row.outcome is not None
    assert f"after {MAX_ATTEMPTS} attempts" in row.outcome
    assert "poisoned for the test" in row.outcome
    clock.now += 10 * 24 * 3600
    assert run_batch(client) == 0, "a parked event is not tried again by itself"
    assert metric(client, "retried", "bounce") - retried == MAX_ATTEMPTS - 1
    assert metric(client, "failed", "bounce") - failed == 1

    cure(client)
    replayed = client.post(f"/api/v1/admin/webhook-events/{row.id}/replay", headers=admin)
    assert replayed.status_code == 200
    assert run_batch(client) == 1
    row = event_row(client, bad["sg_event_id"])
    assert (row.status, row.attempts) == ("applied", MAX_ATTEMPTS + 1)
    assert count(client, Suppression, Suppression.email == POISON) == 1
    assert by_status(client, "applied") == 26


def test_several_bad_events_scattered_in_a_big_batch_are_each_isolated(
    driven: tuple[TestClient, Clock],
) -> None:
    """Halving finds every failing event of a 300-event batch; each of the others applies
    exactly once."""
    client, _clock = driven
    poison(client)
    events = [sendgrid_event("bounce", f"p{i}@example.com") for i in range(300)]
    for i in (0, 137, 138, 299):
        events[i] = sendgrid_event("dropped", POISON)
    post_sendgrid(client, events)
    assert run_batch(client) == 300
    assert by_status(client, "applied") == 296
    assert by_status(client, "pending") == 4
    assert count(client, Suppression) == 296


def reference_id(client: TestClient, email: str) -> str:
    user_id: str = client.get("/api/v1/me", headers=bearer(create_user(client, email))).json()["id"]
    return user_id


def checkout(session_id: str, **fields: Any) -> dict[str, Any]:
    return stripe_event(
        "checkout.session.completed",
        {
            "id": session_id,
            "object": "checkout.session",
            "payment_status": "paid",
            "amount_total": 1000,
            "currency": "usd",
            "metadata": {},
            **fields,
        },
    )


def test_values_that_cannot_be_stored_fail_their_event_at_once_with_the_reason(
    driven: tuple[TestClient, Clock],
) -> None:
    """An address over 320 characters, a client_reference_id over 32, an amount or credits
    over a 32-bit column, metadata that is not an object, an id over 200: each such event
    fails on its first try, saying which field and why (no DataError on PostgreSQL, no
    retries); the events beside them apply."""
    client, _clock = driven
    buyer = reference_id(client, "buyer@example.com")
    long_email = "a" * 400 + "@example.com"
    sendgrid = [
        sendgrid_event("bounce", long_email),
        sendgrid_event("bounce", "fine@example.com"),
    ]
    post_sendgrid(client, sendgrid)
    bad_stripe = {
        "client_reference_id is 40": checkout("cs_long_ref", client_reference_id="u" * 40),
        "amount_total must be a whole number": checkout("cs_big", amount_total=2**40),
        "metadata.credits is more than": checkout(
            "cs_credits", client_reference_id=buyer, metadata={"credits": "9" * 12}
        ),
        "metadata must be an object": checkout("cs_meta", metadata=["a", "list"]),
        "data.object.id is 300": checkout("cs_" + "x" * 297),
        "payment_intent must be a string": checkout("cs_pi", payment_intent=12),
        "client_reference_id must be a string, not dict": checkout(
            "cs_ref_object", client_reference_id={"id": "u1"}
        ),
    }
    for event in bad_stripe.values():
        assert post_stripe(client, event).status_code == 200
    good = checkout("cs_good", client_reference_id=buyer, payment_intent={"id": "pi_expanded"})
    post_stripe(client, good)
    assert run_batch(client) == 2 + len(bad_stripe) + 1

    row = event_row(client, sendgrid[0]["sg_event_id"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.outcome == "rejected: the email is 412 characters; an address has 320"
    for reason, event in bad_stripe.items():
        row = event_row(client, event["id"])
        assert (row.status, row.attempts) == ("failed", 1), reason
        assert reason in str(row.outcome), (reason, row.outcome)
    assert event_row(client, sendgrid[1]["sg_event_id"]).status == "applied"
    assert count(client, Suppression) == 1
    row = event_row(client, good["id"])
    assert (row.status, row.outcome) == ("applied", "credited 100")
    assert count(client, CreditEntry, CreditEntry.user_id == buyer) == 1


def test_long_event_ids_are_kept_apart_not_cut_into_one(
    driven: tuple[TestClient, Clock],
) -> None:
    """Two provider event ids longer than the column, alike in their first 128 characters,
    are two events (stored as their digests), and a copy of either is a duplicate."""
    client, _clock = driven
    first = sendgrid_event("open", "a@example.com", sg_event_id="e" * 150 + "1")
    second = sendgrid_event("open", "a@example.com", sg_event_id="e" * 150 + "2")
    assert post_sendgrid(client, [first, second]).json() == {"accepted": 2, "duplicates": 0}
    assert post_sendgrid(client, [second]).json() == {"accepted": 0, "duplicates": 1}

    async def ids(session: AsyncSession) -> list[str]:
        return list(await session.scalars(select(WebhookEvent.event_id)))

    stored = db(client, ids)
    assert len(stored) == 2
    assert all(len(i) <= 128 for i in stored)


def test_the_running_processor_retries_a_bounded_number_of_times(
    tmp_path: Path, engine: str
) -> None:
    """With its own loop running and a short backoff, a failing event is tried exactly
    `max_attempts` times and then left alone, while the events after it apply at once."""
    with start(tmp_path, engine, webhook_retry_backoff_s=0.05, webhook_max_attempts=3) as client:
        poison(client)
        bad = sendgrid_event("bounce", POISON)
        post_sendgrid(client, [bad, *[sendgrid_event("open", f"o{i}@x.io") for i in range(10)]])
        deadline = time.monotonic() + 30
        while event_row(client, bad["sg_event_id"]).status != "failed":
            assert time.monotonic() < deadline, "never parked"
            time.sleep(0.05)
        assert by_status(client, "applied") == 10
        time.sleep(1.2)
        row = event_row(client, bad["sg_event_id"])
        assert (row.status, row.attempts) == ("failed", 3)


def test_a_nul_character_in_a_payload_stops_nothing(driven: tuple[TestClient, Clock]) -> None:
    """A signed event holding `\\u0000` (in its id, its address, a field nobody reads) is
    stored with U+FFFD in its place. On PostgreSQL text cannot hold a NUL: the delivery failed
    with a 500 (and so did those sharing its commit), and a NUL anywhere in a stored payload
    failed every read of the pending batch, so nothing would ever apply again."""
    client, _clock = driven
    odd = sendgrid_event("bounce", "nul\u0000@example.com", sg_event_id="id\u0000nul")
    unread = sendgrid_event("open", "quiet@example.com", note="a\u0000b")
    good = [sendgrid_event("open", f"g{i}@example.com") for i in range(3)]
    assert post_sendgrid(client, [odd, unread, *good]).json() == {"accepted": 5, "duplicates": 0}
    stripe = checkout("cs_nul\u0000", client_reference_id="u\u0000")
    assert post_stripe(client, stripe).status_code == 200
    assert run_batch(client) == 6
    assert by_status(client, "applied") == 6
    assert event_row(client, "id\ufffdnul").payload["email"] == "nul\ufffd@example.com"
    assert event_row(client, unread["sg_event_id"]).payload["note"] == "a\ufffdb"
    assert count(client, Suppression, Suppression.email == "nul\ufffd@example.com") == 1
