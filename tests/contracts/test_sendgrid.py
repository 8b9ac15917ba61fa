"""The SendGrid simulator answers as SendGrid's published OpenAPI documents say: every response
of every simulated route, success and error, validates against the schema written from them
(tests/contracts/sendgrid/), requests valid under those schemas are accepted, and requests
that break them get the documented 400 `{"errors": [{message, field, help}]}`."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

SCHEMAS = Path(__file__).parent / "sendgrid"
AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEYS['sendgrid']}"}


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(instance: Any, name: str) -> list[str]:
    """Why `instance` does not validate against schema `name` (empty when it does)."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]


def mail(**extra: Any) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "dana@example.com", "name": "Dana"}]}],
        "from": {"email": "jobs@mail.example.com", "name": "Sam"},
        "subject": "Quick question",
        "content": [{"type": "text/plain", "value": "Hi there"}],
        **extra,
    }


def send(sb: SandboxServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{sb.base('sendgrid')}/v3/mail/send",
        content=content,
        headers={"content-type": "application/json", **(AUTH if headers is None else headers)},
        timeout=30,
    )


VALID = [
    mail(),
    mail(categories=["outreach", "pilot"], custom_args={"outreach_id": "out_1"}),
    mail(
        personalizations=[
            {
                "to": [{"email": "a@example.com"}],
                "cc": [{"email": "b@example.com"}],
                "bcc": [{"email": "c@example.com"}],
                "subject": "Per person",
                "custom_args": {"k": "v"},
            }
        ],
        reply_to={"email": "replies@example.com"},
    ),
    {
        "personalizations": [{"to": [{"email": "a@example.com"}], "dynamic_template_data": {}}],
        "from": {"email": "jobs@mail.example.com"},
        "template_id": "d-0123456789abcdef",
    },
    mail(
        attachments=[{"content": "aGk=", "filename": "cv.txt", "type": "text/plain"}],
        asm={"group_id": 42},
        ip_pool_name="outreach",
        reply_to_list=[{"email": "r1@example.com"}, {"email": "r2@example.com"}],
    ),
]


@pytest.mark.parametrize("body", VALID)
def test_valid_mail_is_accepted(sb: SandboxServer, body: dict[str, Any]) -> None:
    """A body valid under the published request schema gets 202, no body, an X-Message-Id."""
    assert problems(body, "mail_send.request") == []
    response = send(sb, body)
    assert response.status_code == 202, response.text
    assert response.content == b""
    assert response.headers["x-message-id"]


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no from", {k: v for k, v in mail().items() if k != "from"}, "from"),
    ("from without email", mail(**{"from": {"name": "Sam"}}), "from"),
    ("bad from address", mail(**{"from": {"email": "not-an-address"}}), "from.email"),
    (
        "no personalizations",
        {k: v for k, v in mail().items() if k != "personalizations"},
        "personalizations",
    ),
    ("empty personalizations", mail(personalizations=[]), "personalizations"),
    (
        "personalization without to",
        mail(personalizations=[{"subject": "x"}]),
        "personalizations.0.to",
    ),
    ("empty to", mail(personalizations=[{"to": []}]), "personalizations.0.to"),
    (
        "bad recipient",
        mail(personalizations=[{"to": [{"email": "nope"}]}]),
        "personalizations.0.to.0.email",
    ),
    ("empty content value", mail(content=[{"type": "text/plain", "value": ""}]), "content.0"),
    ("empty content", mail(content=[]), "content"),
    (
        "reply_to and reply_to_list",
        mail(reply_to={"email": "a@example.com"}, reply_to_list=[{"email": "b@example.com"}]),
        "reply_to",
    ),
    ("11 categories", mail(categories=[f"c{i}" for i in range(11)]), "categories"),
    ("duplicate categories", mail(categories=["a", "a"]), "categories"),
    ("category over 255", mail(categories=["x" * 256]), "categories"),
    ("custom_args not strings", mail(custom_args={"n": 1}), "custom_args"),
    ("send_at not integer", mail(send_at="tomorrow"), "send_at"),
    (
        "attachment without content",
        mail(attachments=[{"filename": "a.txt"}]),
        "attachments.0.content",
    ),
    (
        "attachment without filename",
        mail(attachments=[{"content": "aGk="}]),
        "attachments.0.filename",
    ),
    (
        "bad disposition",
        mail(attachments=[{"content": "aGk=", "filename": "a", "disposition": "x"}]),
        "attachments.0.disposition",
    ),
    ("asm without group_id", mail(asm={}), "asm.group_id"),
    ("ip pool too short", mail(ip_pool_name="x"), "ip_pool_name"),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_mail_gets_the_documented_400(
    sb: SandboxServer, case: str, body: dict[str, Any], field: str
) -> None:
    """A body the published schema refuses gets 400 with a valid error body naming the field."""
    assert problems(body, "mail_send.request") != [], f"{case}: the schema accepts it"
    response = send(sb, body)
    assert response.status_code == 400, response.text
    errors = response.json()
    assert problems(errors, "error.response") == []
    assert field in [e["field"] for e in errors["errors"]]
    assert all(e["help"].startswith("http") for e in errors["errors"])


def test_rules_the_schema_cannot_express_are_enforced(sb: SandboxServer) -> None:
    """Documented rules outside the schema: a subject unless a template or every
    personalization has one; at most 1,000 recipients in all."""
    no_subject = {k: v for k, v in mail().items() if k != "subject"}
    assert problems(no_subject, "mail_send.request") == []
    response = send(sb, no_subject)
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["subject"]
    crowd = mail(
        personalizations=[
            {"to": [{"email": f"p{i}-{j}@example.com"} for j in range(2)]} for i in range(501)
        ]
    )
    response = send(sb, crowd)
    assert response.status_code == 400
    assert problems(response.json(), "error.response") == []


def test_mail_send_errors_validate(sb: SandboxServer) -> None:
    """401 (no key, wrong key), 400 (not JSON), 413 (over 30 MB), 429 and 500 are SendGrid's
    error body."""
    answers = {
        "no key": send(sb, mail(), headers={}),
        "wrong key": send(sb, mail(), headers={"Authorization": "Bearer SG.wrong"}),
        "not json": send(sb, b"{not json"),
        "too large": send(sb, b'{"x": "' + b"a" * (30 * 1024 * 1024) + b'"}'),
    }
    sb.control("sendgrid", fail_next=1, error_status=500)
    answers["server error"] = send(sb, mail())
    sb.control("sendgrid", rate_limit="1/60")
    send(sb, mail())
    answers["rate limited"] = send(sb, mail())
    statuses = {case: r.status_code for case, r in answers.items()}
    assert statuses == {
        "no key": 401,
        "wrong key": 401,
        "not json": 400,
        "too large": 413,
        "server error": 500,
        "rate limited": 429,
    }
    for case, response in answers.items():
        assert problems(response.json(), "error.response") == [], case


def _world(sb: SandboxServer) -> tuple[list[str], str]:
    """A thousand deliverable addresses and one that bounces, from the world."""
    good: list[str] = []
    bad = ""
    for company in sb.sandbox.world.companies:
        for person in company.people:
            if person.bounces and not bad:
                bad = person.email
            elif not person.bounces and len(good) < 999:
                good.append(person.email)
        if bad and len(good) >= 999:
            return good, bad
    raise AssertionError("the world has too few people")


def test_suppression_lists_validate(sb: SandboxServer) -> None:
    """Bounces and spam reports are arrays of the published record shapes, filtered and paged;
    bad paging and a missing key get SendGrid's error body."""
    good, bad = _world(sb)
    body = mail(personalizations=[{"to": [{"email": e}]} for e in [*good, bad]])
    assert send(sb, body).status_code == 202
    base = f"{sb.base('sendgrid')}/v3/suppression"
    bounces = httpx.get(f"{base}/bounces", headers=AUTH)
    spam = httpx.get(f"{base}/spam_reports", headers=AUTH, params={"limit": 500})
    assert bounces.status_code == spam.status_code == 200
    assert [b["email"] for b in bounces.json()] == [bad]
    assert problems(bounces.json(), "bounces.response") == []
    assert spam.json(), "no spam report among 999 deliveries"
    assert problems(spam.json(), "spam_reports.response") == []
    first = spam.json()[0]["email"]
    one = httpx.get(f"{base}/spam_reports", headers=AUTH, params={"email": first, "limit": 1})
    assert [r["email"] for r in one.json()] == [first]
    for params in ({"limit": 501}, {"limit": 0}, {"offset": "x"}):
        refused = httpx.get(f"{base}/bounces", headers=AUTH, params=params)
        assert refused.status_code == 400
        assert problems(refused.json(), "error.response") == []
    denied = httpx.get(f"{base}/spam_reports")
    assert denied.status_code == 401
    assert problems(denied.json(), "error.response") == []


def test_event_webhook_settings_validate(sb: SandboxServer) -> None:
    """GET/PATCH of the Event Webhook settings and of its signing answer the published shapes
    (GET with the public key and no dates, PATCH with the dates); a request outside the request
    schema gets SendGrid's 400."""
    base = f"{sb.base('sendgrid')}/v3/user/webhooks/event/settings"
    current = httpx.get(base, headers=AUTH)
    assert problems(current.json(), "event_webhook_get.response") == []
    change = {"enabled": True, "open": False, "spam_report": True}
    assert problems(change, "event_webhook.request") == []
    patched = httpx.patch(base, headers=AUTH, json=change)
    assert patched.status_code == 200
    assert problems(patched.json(), "event_webhook.response") == []
    assert patched.json()["open"] is False
    for bad in ({"url": "ftp://x"}, {"enabled": "yes"}, {"click": 1}):
        assert problems(bad, "event_webhook.request") != []
        refused = httpx.patch(base, headers=AUTH, json=bad)
        assert refused.status_code == 400
        assert problems(refused.json(), "error.response") == []
    signed = httpx.get(f"{base}/signed", headers=AUTH)
    assert problems(signed.json(), "event_webhook_signed.response") == []
    assert signed.json()["id"] == current.json()["id"]
    assert signed.json()["public_key"] == current.json()["public_key"] != ""
    off = httpx.patch(f"{base}/signed", headers=AUTH, json={"enabled": False})
    assert problems(off.json(), "event_webhook_signed.response") == []
    assert off.json()["public_key"] == ""
    assert problems({}, "event_webhook_signed.request") != []
    refused = httpx.patch(f"{base}/signed", headers=AUTH, json={})
    assert refused.status_code == 400
    assert problems(refused.json(), "error.response") == []
    denied = httpx.get(base)
    assert denied.status_code == 401
    assert problems(denied.json(), "error.response") == []


def test_unknown_routes_and_methods_answer_the_error_body(sb: SandboxServer) -> None:
    """A path SendGrid does not have (404) and a wrong method (405) get its error body."""
    base = f"{sb.base('sendgrid')}/v3"
    answers = {
        404: httpx.get(f"{base}/nope", headers=AUTH),
        405: httpx.get(f"{base}/mail/send", headers=AUTH),
    }
    for status, response in answers.items():
        assert response.status_code == status
        assert problems(response.json(), "error.response") == []
