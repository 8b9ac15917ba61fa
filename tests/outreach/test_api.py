"""The sequence API over HTTP on a live server with its sandbox: senders, sequences,
enrolments (JSON, CSV, an enrichment job's results), timelines, pause/resume/cancel, replies,
one-click unsubscribe, per-user isolation and clear errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live_server import LiveServer, live_server
from tests.support.waiting import wait_for

ALWAYS = {"days": [0, 1, 2, 3, 4, 5, 6], "start_hour": 0, "end_hour": 24}
CSV = {"content-type": "text/csv"}


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """The server on SQLite and on PostgreSQL."""
    overrides: dict[str, Any] = {"sequence_tick_s": 0.1}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    with live_server(tmp_path, **overrides) as server:
        yield server


def api(live: LiveServer, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {key or live.key}", **kw.pop("headers", {})}
    return httpx.request(method, f"{live.url}{path}", headers=headers, timeout=30, **kw)


def setup_sequence(live: LiveServer, steps: int = 2, delay_s: float = 3600) -> str:
    sender = api(
        live,
        "POST",
        "/api/v1/senders",
        json={"email": "auto1@rf-send-01.com", "min_gap_s": 0, "jitter_s": 0},
    )
    assert sender.status_code == 201, sender.text
    sender_id = sender.json()["id"]
    body = {
        "name": "intro",
        "sender_id": sender_id,
        "steps": [
            {"delay_s": 0 if n == 0 else delay_s, "subject": "Hi {{first_name}}", "body": "B"}
            for n in range(steps)
        ],
        "window": ALWAYS,
        "timezone": "America/New_York",
    }
    created = api(live, "POST", "/api/v1/sequences", json=body)
    assert created.status_code == 201, created.text
    sequence_id: str = created.json()["id"]
    return sequence_id


def mail(live: LiveServer, email: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(
        f"{live.url}/sandbox/_control/sendgrid/mail", params={"email": email} if email else {}
    ).json()
    return rows


def test_enrol_json_and_csv_then_follow_the_run_and_timeline(live: LiveServer) -> None:
    """202 + Location to the run; step 0 goes to each contact once; the timeline shows
    scheduled, sending, sent with SendGrid's message id, then delivery events."""
    sequence_id = setup_sequence(live)
    response = api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        json={"contacts": [{"email": "A@Example.org", "first_name": "Ann"}]},
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/sequence-runs/{response.json()['id']}"
    csv_body = "email,first_name,timezone\nb@example.org,Bo,Europe/Berlin\nnot-an-email,X,\n"
    csv_run = api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        content=csv_body,
        headers={"content-type": "text/csv"},
    )
    assert csv_run.status_code == 202, csv_run.text
    assert csv_run.json()["total"] == 1
    assert csv_run.json()["rejected"][0]["line"] == 3
    wait_for(lambda: len(mail(live)) == 2)
    assert mail(live, "a@example.org")[0]["subject"] == "Hi Ann"
    listed = api(live, "GET", "/api/v1/enrollments", params={"sequence_id": sequence_id}).json()
    assert sorted(e["email"] for e in listed) == ["a@example.org", "b@example.org"]
    enrollment_id = next(e["id"] for e in listed if e["email"] == "a@example.org")

    def delivered() -> dict[str, Any] | None:
        got: dict[str, Any] = api(live, "GET", f"/api/v1/enrollments/{enrollment_id}").json()
        kinds = [t["kind"] for t in got["timeline"]]
        return got if "processed" in kinds and "delivered" in kinds else None

    got = wait_for(delivered)
    kinds = [t["kind"] for t in got["timeline"]]
    assert kinds[:3] == ["scheduled", "sending", "sent"]
    assert got["steps"][0]["state"] == "sent"
    assert got["steps"][0]["message_id"]
    assert got["timeline"][2]["detail"] == got["steps"][0]["message_id"]
    assert got["timeline"][0]["at"].endswith("Z")


def test_pause_resume_cancel_and_replied(live: LiveServer) -> None:
    """A paused sender or enrolment sends nothing; resumed, it goes; cancel and replied end
    the enrolment (a second action is a 409); the run's end is notified once."""
    sequence_id = setup_sequence(live, steps=2, delay_s=3600)
    sender_id = api(live, "GET", "/api/v1/senders").json()[0]["id"]
    api(live, "POST", f"/api/v1/senders/{sender_id}/pause")
    run = api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        json={"contacts": [{"email": f"c{i}@example.org"} for i in range(3)]},
    ).json()
    ids = {
        e["email"]: e["id"]
        for e in api(live, "GET", "/api/v1/enrollments", params={"run_id": run["id"]}).json()
    }
    assert (
        api(live, "POST", f"/api/v1/enrollments/{ids['c0@example.org']}/pause").json()["status"]
        == "paused"
    )
    cancelled = api(live, "POST", f"/api/v1/enrollments/{ids['c1@example.org']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    again = api(live, "POST", f"/api/v1/enrollments/{ids['c1@example.org']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"]
    api(live, "POST", f"/api/v1/senders/{sender_id}/resume")
    wait_for(lambda: len(mail(live, "c2@example.org")) == 1)
    assert mail(live, "c0@example.org") == []
    assert mail(live, "c1@example.org") == []
    api(live, "POST", f"/api/v1/enrollments/{ids['c0@example.org']}/resume")
    wait_for(lambda: len(mail(live, "c0@example.org")) >= 1)
    replied = api(live, "POST", f"/api/v1/enrollments/{ids['c0@example.org']}/replied").json()
    assert (replied["status"], replied["stop_reason"]) == ("stopped", "reply")
    api(live, "POST", f"/api/v1/enrollments/{ids['c2@example.org']}/cancel")
    finished = wait_for(
        lambda: (
            (r := api(live, "GET", f"/api/v1/sequence-runs/{run['id']}").json())["finished_at"]
            and r
        )
    )
    assert finished["remaining"] == 0
    notes = api(live, "GET", "/api/v1/notifications").json()
    assert [n["data"]["id"] for n in notes if n["kind"] == "sequence_run.finished"] == [run["id"]]


def test_one_click_unsubscribe_blocks_the_address_at_once(live: LiveServer) -> None:
    """The List-Unsubscribe link: GET changes nothing, one POST blocks the address for that
    user and stops the enrolment; a forged token is a 404."""
    sequence_id = setup_sequence(live, steps=2, delay_s=1.0)
    api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        json={"contacts": [{"email": "u@example.org"}]},
    )
    first = wait_for(lambda: mail(live, "u@example.org"))[0]
    link = first["headers"]["List-Unsubscribe"].strip("<>")
    assert httpx.get(link).status_code == 200
    assert httpx.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    enrollment = api(live, "GET", "/api/v1/enrollments", params={"email": "u@example.org"})
    assert enrollment.json()[0]["status"] == "stopped"
    assert enrollment.json()[0]["stop_reason"] == "unsubscribe"
    time.sleep(1.5)
    assert len(mail(live, "u@example.org")) == 1
    assert httpx.post(link[:-3] + "xyz").status_code == 404


def test_other_users_resources_are_404_and_bad_input_says_what_to_fix(live: LiveServer) -> None:
    """Another user's sequence or enrolment is a 404; an unknown variable, a bad time zone,
    a missing source or a CSV without an email column is a 422 naming the problem."""
    sequence_id = setup_sequence(live)
    other = live.new_user("other@example.com")
    assert api(live, "GET", f"/api/v1/sequences/{sequence_id}", key=other).status_code == 404
    assert (
        api(
            live,
            "POST",
            f"/api/v1/sequences/{sequence_id}/enrollments",
            key=other,
            json={"contacts": [{"email": "x@example.org"}]},
        ).status_code
        == 404
    )
    sender_id = api(live, "GET", "/api/v1/senders").json()[0]["id"]
    bad = api(
        live,
        "POST",
        "/api/v1/sequences",
        json={
            "name": "x",
            "sender_id": sender_id,
            "steps": [{"subject": "{{nickname}}", "body": "b"}],
            "timezone": "Mars/Olympus",
        },
    )
    assert bad.status_code == 422
    assert "nickname" in bad.text
    assert "Mars/Olympus" in bad.text
    neither = api(live, "POST", f"/api/v1/sequences/{sequence_id}/enrollments", json={})
    assert neither.status_code == 422
    assert "contacts or enrichment_job_id" in neither.text
    no_email = api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        content="name\nx\n",
        headers={"content-type": "text/csv"},
    )
    assert no_email.status_code == 422
    assert "email" in no_email.json()["error"]["message"]
    empty = api(live, "POST", f"/api/v1/sequences/{sequence_id}/enrollments", json={"contacts": []})
    assert empty.status_code == 422, empty.text
    assert "contacts" in empty.text
    header_only = api(
        live, "POST", f"/api/v1/sequences/{sequence_id}/enrollments", content="email\n", headers=CSV
    )
    assert header_only.status_code == 422, header_only.text
    assert "no contact to enrol" in header_only.json()["error"]["message"]
    all_bad = api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        content="email\nnot-an-address\n",
        headers=CSV,
    )
    assert all_bad.status_code == 422
    assert all_bad.json()["error"]["details"]["rejected"][0]["line"] == 2


def test_a_reply_through_inbound_parse_stops_the_enrolment(live: LiveServer) -> None:
    """The simulator's recipient replies: the Inbound Parse form reaches our tokened URL, is
    matched by In-Reply-To, and the enrolment stops at once; a wrong token is a 404."""
    sequence_id = setup_sequence(live, steps=2, delay_s=3600)
    api(
        live,
        "POST",
        f"/api/v1/sequences/{sequence_id}/enrollments",
        json={"contacts": [{"email": "r@example.org"}, {"email": "quiet@example.org"}]},
    )
    wait_for(lambda: len(mail(live)) == 2)
    inbound = api(live, "GET", "/api/v1/inbound-parse").json()["url"]
    replied = httpx.post(
        f"{live.url}/sandbox/_control/sendgrid/reply",
        json={"email": "r@example.org", "url": inbound},
        timeout=30,
    )
    assert replied.json() == {"status": 200}, replied.text
    rows = {e["email"]: e for e in api(live, "GET", "/api/v1/enrollments").json()}
    assert (rows["r@example.org"]["status"], rows["r@example.org"]["stop_reason"]) == (
        "stopped",
        "reply",
    )
    # The other enrolment, mailed in the same request (one message id), goes on; unless
    # its recipient happened to unsubscribe or report spam (the simulator's do, 3 in 100).
    assert len({m["message_id"] for m in mail(live)}) == 1
    assert rows["quiet@example.org"]["stop_reason"] in (None, "unsubscribe", "spam_report")
    forged = httpx.post(f"{live.url}/webhooks/sendgrid/inbound/nope", data={"from": "x"})
    assert forged.status_code == 404


def test_an_ai_step_is_drafted_at_enrolment_and_the_edit_goes(live: LiveServer) -> None:
    """An AI step's draft is written at enrolment through the Anthropic simulator, shown on
    the enrolment's step, editable through the drafts API while the enrolment is paused,
    and the edit is what goes; a step with both a body and ai_draft is a 422."""
    sender = api(live, "POST", "/api/v1/senders", json={"email": "a@rf-send-01.com"}).json()
    both = api(
        live,
        "POST",
        "/api/v1/sequences",
        json={
            "name": "x",
            "sender_id": sender["id"],
            "steps": [{"subject": "S", "body": "B", "ai_draft": {"role": "Engineer"}}],
        },
    )
    assert both.status_code == 422
    assert "either subject and body, or ai_draft" in both.text
    created = api(
        live,
        "POST",
        "/api/v1/sequences",
        json={
            "name": "ai",
            "sender_id": sender["id"],
            "steps": [{"delay_s": 3600, "ai_draft": {"role": "Engineer", "tone": "direct"}}],
            "window": ALWAYS,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["steps"][0]["ai_draft"]["role"] == "Engineer"
    run = api(
        live,
        "POST",
        f"/api/v1/sequences/{created.json()['id']}/enrollments",
        json={"contacts": [{"email": "ann@acme.org", "first_name": "Ann", "company": "Acme"}]},
    )
    assert run.status_code == 202, run.text
    enrollment = api(live, "GET", "/api/v1/enrollments").json()[0]
    path = f"/api/v1/enrollments/{enrollment['id']}"
    assert api(live, "POST", f"{path}/pause").json()["status"] == "paused"
    step = wait_for(
        lambda: next(
            (s for s in api(live, "GET", path).json()["steps"] if s["draft_state"] == "ready"),
            None,
        )
    )
    draft = api(live, "GET", f"/api/v1/drafts/{step['draft_id']}").json()
    assert draft["status"] == "complete"
    assert "Ann" in draft["body"]
    edited = api(
        live, "PATCH", f"/api/v1/drafts/{step['draft_id']}", json={"body": "Short and edited."}
    )
    assert edited.status_code == 200, edited.text
    assert api(live, "POST", f"{path}/resume").json()["status"] == "active"
    sent = wait_for(lambda: mail(live, "ann@acme.org"))
    assert [(m["subject"], m["body"]) for m in sent] == [(draft["subject"], "Short and edited.")]
    other = live.new_user("other@example.com")
    assert api(live, "GET", f"/api/v1/drafts/{step['draft_id']}", key=other).status_code == 404
