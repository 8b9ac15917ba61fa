"""SendGrid simulator: mail/send validation, suppressions, webhook settings, and event batches
signed so that the official `sendgrid` EventWebhook helper verifies them."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEYS['sendgrid']}"}


def send(sb: SandboxServer, body: dict[str, Any], headers: dict[str, str] = AUTH) -> httpx.Response:
    return httpx.post(f"{sb.base('sendgrid')}/v3/mail/send", json=body, headers=headers)


def mail(to: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "personalizations": [
            {"to": [{"email": e} for e in to], "custom_args": {"outreach_id": "out_1"}}
        ],
        "from": {"email": "jobs@mail.example.com", "name": "Sam"},
        "subject": "Quick question",
        "content": [{"type": "text/plain", "value": "Hi there"}],
        "categories": ["outreach"],
        **extra,
    }


def world_people(sb: SandboxServer) -> tuple[str, str]:
    """A deliverable and a bouncing address from the world."""
    good = bad = ""
    for company in sb.sandbox.world.companies[:50]:
        for person in company.people:
            if person.bounces and not bad:
                bad = person.email
            if not person.bounces and not good:
                good = person.email
    return good, bad


def events(sb: SandboxServer, count: int) -> list[dict[str, Any]]:
    public_key = httpx.get(
        f"{sb.base('sendgrid')}/v3/user/webhooks/event/settings/signed", headers=AUTH
    ).json()["public_key"]
    helper = EventWebhook()
    key = helper.convert_public_key_to_ecdsa(public_key)
    found: list[dict[str, Any]] = []
    for headers, body in sb.caught.of("sendgrid"):
        assert helper.verify_signature(
            body.decode(),
            headers[EventWebhookHeader.SIGNATURE.lower()],
            headers[EventWebhookHeader.TIMESTAMP.lower()],
            key,
        )
        assert not helper.verify_signature(
            body.decode() + " ",
            headers[EventWebhookHeader.SIGNATURE.lower()],
            headers[EventWebhookHeader.TIMESTAMP.lower()],
            key,
        )
        found += json.loads(body)
    assert len(found) >= count
    return found


def wait_events(sb: SandboxServer, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = sum(len(json.loads(b)) for _, b in sb.caught.of("sendgrid"))
        if got >= count:
            return events(sb, count)
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} events arrived")


def test_accepted_mail_is_202_with_a_message_id(sb: SandboxServer) -> None:
    good, _ = world_people(sb)
    response = send(sb, mail([good]))
    assert response.status_code == 202
    assert response.content == b""
    assert len(response.headers["x-message-id"]) >= 16


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"from": None}, "from"),
        ({"personalizations": []}, "personalizations"),
        (
            {"personalizations": [{"to": [{"email": "not-an-address"}]}]},
            "personalizations.0.to.0.email",
        ),
        ({"subject": None}, "subject"),
        ({"content": []}, "content"),
        (
            {"personalizations": [{"to": [{"email": f"a{i}@example.com"} for i in range(1001)]}]},
            "personalizations",
        ),
        ({"categories": [f"c{i}" for i in range(11)]}, "categories"),
        (
            {"reply_to": {"email": "a@example.com"}, "reply_to_list": [{"email": "b@example.com"}]},
            "reply_to",
        ),
    ],
)
def test_invalid_mail_is_400_with_sendgrids_errors(
    sb: SandboxServer, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**mail(["a@example.com"]), **change}.items() if v is not None}
    response = send(sb, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in [e["field"] for e in errors]
    assert all(e["message"] and "help" in e for e in errors)
    assert sb.sandbox.sendgrid.scheduled == []


def test_wrong_key_is_401(sb: SandboxServer) -> None:
    response = send(sb, mail(["a@example.com"]), headers={"Authorization": "Bearer SG.wrong"})
    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            {
                "field": None,
                "message": "The provided authorization grant is invalid, expired, or revoked",
            }
        ]
    }


def test_delivery_events_are_signed_and_verified_by_the_official_helper(sb: SandboxServer) -> None:
    good, bad = world_people(sb)
    response = send(sb, mail([good, bad, "someone@example.com"]))
    message_id = response.headers["x-message-id"]
    found = wait_events(sb, 6)
    by_email: dict[str, list[str]] = {}
    for event in found:
        assert event["sg_message_id"].startswith(message_id)
        assert event["smtp-id"] == f"<{message_id}@ismtpd-sandbox>"
        assert event["outreach_id"] == "out_1"
        assert event["category"] == ["outreach"]
        assert len(event["sg_event_id"]) == 22
        by_email.setdefault(event["email"], []).append(event["event"])
    # Batches travel concurrently, as SendGrid's do: a recipient's events need not arrive in order.
    assert {"processed", "delivered"} <= set(by_email[good])
    assert sorted(by_email[bad]) == ["bounce", "processed"]
    assert {"processed", "delivered"} <= set(by_email["someone@example.com"])
    bounces = httpx.get(f"{sb.base('sendgrid')}/v3/suppression/bounces", headers=AUTH)
    assert [b["email"] for b in bounces.json()] == [bad]
    assert bounces.headers["x-ratelimit-limit"] == "600"


def test_suppressed_addresses_are_dropped(sb: SandboxServer) -> None:
    _, bad = world_people(sb)
    send(sb, mail([bad]))
    wait_events(sb, 2)
    sb.caught.clear()
    send(sb, mail([bad]))
    assert sorted(e["event"] for e in wait_events(sb, 2)) == ["dropped", "processed"]


def test_suppression_queries_filter_by_time_and_page(sb: SandboxServer) -> None:
    rows = {
        f"x{i}@example.com": {
            "created": 1000 + i,
            "email": f"x{i}@example.com",
            "reason": "r",
            "status": "5.1.1",
        }
        for i in range(5)
    }
    sb.sandbox.sendgrid.bounces.update(rows)
    url = f"{sb.base('sendgrid')}/v3/suppression/bounces"
    window = httpx.get(url, headers=AUTH, params={"start_time": 1001, "end_time": 1003}).json()
    assert [r["created"] for r in window] == [1003, 1002, 1001]
    page = httpx.get(url, headers=AUTH, params={"limit": 2, "offset": 1}).json()
    assert [r["created"] for r in page] == [1003, 1002]
    assert httpx.get(url, headers=AUTH, params={"limit": 501}).status_code == 400
    assert (
        httpx.get(f"{sb.base('sendgrid')}/v3/suppression/spam_reports", headers=AUTH).json() == []
    )


def test_webhook_settings_redirect_and_disable_events(sb: SandboxServer) -> None:
    url = f"{sb.base('sendgrid')}/v3/user/webhooks/event/settings"
    changed = httpx.patch(
        url, headers=AUTH, json={"url": f"{sb.url}/webhooks/elsewhere", "open": False}
    )
    assert changed.json()["url"].endswith("/webhooks/elsewhere")
    assert changed.json()["open"] is False
    assert httpx.patch(url, headers=AUTH, json={"url": "ftp://nope"}).status_code == 400
    good, _ = world_people(sb)
    send(sb, mail([good]))
    delivered = sb.wait_for("elsewhere", 1)
    assert all(e["event"] != "open" for _, b in delivered for e in json.loads(b))
    assert sb.caught.of("sendgrid") == []


def test_failed_batches_are_retried_and_may_come_twice_and_shuffled(sb: SandboxServer) -> None:
    """A refused batch comes again, then once more as a duplicate; a shuffled batch is out of
    the order its events happened in, however the flushes fall on this machine's clock."""
    sb.sandbox.sendgrid_sender.base_backoff_s = 0.05
    sb.caught.answers.extend([500])
    sb.control("sendgrid", duplicate_rate=1.0, reorder_rate=1.0, flush_interval_s=0.5)
    good, _ = world_people(sb)
    sent = [good] + [f"p{i}@example.com" for i in range(20)]
    send(sb, mail(sent))
    refused = sb.wait_for("sendgrid", 1)[0][1]
    deadline = time.monotonic() + 10
    while [b for _, b in sb.caught.of("sendgrid")].count(refused) < 3:
        assert time.monotonic() < deadline, "the refused batch was not retried and duplicated"
        time.sleep(0.05)
    # Every recipient's `processed` event falls due at the same moment, so the first batch
    # holds at least one event of each of the 21 recipients. Unshuffled, it lists them in the
    # order they were sent; shuffled, that order is lost (odds of keeping it: 1 in 21!).
    positions = [sent.index(e["email"]) for e in json.loads(refused)]
    assert len(set(positions)) == len(sent)
    assert positions != sorted(positions), "a shuffled batch is out of the order of events"
    sb.sandbox.sendgrid_sender.base_backoff_s = 1.0


def test_the_retry_backoff_is_capped_by_the_control_plane(sb: SandboxServer) -> None:
    """`max_retry_backoff_s`: a batch refused again and again is retried within the cap: five
    attempts inside 8 s, where the default doubling waits 1 + 2 + 4 + 8 s for them."""
    sb.caught.answers.extend([500] * 10)
    sb.control("sendgrid", flush_interval_s=0.05, duplicate_rate=0.0, max_retry_backoff_s=0.3)
    good, _ = world_people(sb)
    send(sb, mail([good]))
    refused = sb.wait_for("sendgrid", 1)[0][1]
    deadline = time.monotonic() + 8
    while [b for _, b in sb.caught.of("sendgrid")].count(refused) < 5:
        assert time.monotonic() < deadline, "the retries waited past the cap"
        time.sleep(0.05)
    sb.control("sendgrid", max_retry_backoff_s=60)
