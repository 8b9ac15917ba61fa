"""Drafting end to end: our API on a real port, the official Anthropic SDK inside it calling
the app's own simulator, each fault shape set on the control plane. Each test checks what the
client sees (events, status), what is stored, and what the metrics say."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.support.live_server import LiveServer, live_server

FIRST, SECOND = "model-first", "model-second"
ASK = {
    "recipient": {"name": "Jane Doe", "title": "VP Product", "company": "acme.com"},
    "aim": {"role": "Product Manager", "about": "I shipped a billing product", "links": []},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("drafts"),
        anthropic_models=f"{FIRST},{SECOND}",
        anthropic_rate_limit="100000/60",
        draft_first_token_s=1.0,
        draft_stall_s=0.5,
        draft_deadline_s=10.0,
        draft_daily_tokens=2000,
    ) as live:
        yield live


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    """The server with clean faults, breakers and budgets, and a user of its own."""
    server.reset()
    server.control("anthropic", rate_limit={"limit": 100000, "period_s": 60})
    server.key = server.new_user(f"u{datetime.now(UTC).timestamp()}@example.com")
    return server


def shape(live: LiveServer, *faults: dict[str, Any]) -> None:
    live.control("anthropic", stream_faults=list(faults))


def events(live: LiveServer, path: str = "/api/v1/drafts", body: Any = ASK) -> list[Any]:
    """The SSE events of one request, as (name, data) pairs."""
    headers = {**live.auth, "accept": "text/event-stream"}
    with httpx.stream("POST", live.url + path, json=body, headers=headers, timeout=30) as r:
        assert r.status_code in (200, 201), r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def names(found: list[Any]) -> list[str]:
    """Event names with runs of deltas folded into one."""
    folded: list[str] = []
    for name, _ in found:
        if not (name == "delta" and folded and folded[-1] == "delta"):
            folded.append(name)
    return folded


def streamed(found: list[Any]) -> str:
    return "".join(data["text"] for name, data in found if name == "delta")


def stored(live: LiveServer, draft_id: str) -> dict[str, Any]:
    """The stored draft; one whose `start` was just sent is stored moments later."""
    url = f"{live.url}/api/v1/drafts/{draft_id}"
    response = httpx.get(url, headers=live.auth)
    for _ in range(50):
        if response.status_code != 404:
            break
        time.sleep(0.1)
        response = httpx.get(url, headers=live.auth)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def sandbox_calls(live: LiveServer) -> dict[str, int]:
    result: dict[str, int] = live.stats()["anthropic"].get("/v1/messages", {})
    return result


def test_a_draft_streams_word_by_word_and_is_stored(live: LiveServer) -> None:
    """start, deltas, done; the stored draft is the done event's; GenAI metrics counted."""
    ttft = metric("gen_ai_client_operation_time_to_first_chunk_seconds_count", model=FIRST)
    took = metric("gen_ai_client_operation_duration_seconds_count", model=FIRST, error_type="")
    inputs = metric("gen_ai_client_token_usage_count", gen_ai_token_type="input", model=FIRST)
    ok = metric(
        "roleferry_integration_calls_total",
        provider="anthropic",
        endpoint="/v1/messages",
        status="success",
        error_type="",
    )
    found = events(live)
    assert names(found) == ["start", "delta", "done"]
    start, done = found[0][1], found[-1][1]
    assert start["model"] == FIRST
    assert len([n for n, _ in found if n == "delta"]) > 20
    assert done["source"] == "model"
    assert streamed(found) == f"Subject: {done['subject']}\n\n{done['body']}"
    assert done["body"].startswith("Hi Jane,")
    assert done["usage"]["input_tokens"] > 0
    assert done["usage"]["output_tokens"] > 20
    draft = stored(live, start["draft_id"])
    assert (draft["status"], draft["source"], draft["model"]) == ("complete", "model", FIRST)
    assert (draft["subject"], draft["body"]) == (done["subject"], done["body"])
    assert draft["usage"] == done["usage"]
    assert (
        metric("gen_ai_client_operation_time_to_first_chunk_seconds_count", model=FIRST) == ttft + 1
    )
    assert (
        metric("gen_ai_client_token_usage_count", gen_ai_token_type="input", model=FIRST)
        == inputs + 1
    )
    assert (
        metric("gen_ai_client_operation_duration_seconds_count", model=FIRST, error_type="")
        == took + 1
    )
    assert (
        metric(
            "roleferry_integration_calls_total",
            provider="anthropic",
            endpoint="/v1/messages",
            status="success",
            error_type="",
        )
        == ok + 1
    )


def test_without_sse_one_json_answer(live: LiveServer) -> None:
    """No `Accept: text/event-stream`: 201 with the stored draft as JSON."""
    response = httpx.post(f"{live.url}/api/v1/drafts", json=ASK, headers=live.auth, timeout=30)
    assert response.status_code == 201
    draft = response.json()
    assert draft["status"] == "complete"
    assert draft["source"] == "model"
    assert draft["subject"]
    assert draft["body"].startswith("Hi Jane,")
    assert stored(live, draft["id"])["body"] == draft["body"]


def test_edit_is_kept_beside_the_original_and_drafts_are_per_user(live: LiveServer) -> None:
    """PATCH stores the edit next to the original; another user gets 404 for everything."""
    draft = httpx.post(f"{live.url}/api/v1/drafts", json=ASK, headers=live.auth, timeout=30).json()
    url = f"{live.url}/api/v1/drafts/{draft['id']}"
    edited = httpx.patch(url, json={"body": "My own words."}, headers=live.auth).json()
    assert edited["edited_body"] == "My own words."
    assert edited["body"] == draft["body"]
    assert edited["edited_at"] is not None
    listed = httpx.get(f"{live.url}/api/v1/drafts", headers=live.auth).json()
    assert [d["id"] for d in listed] == [draft["id"]]
    other = {"Authorization": f"Bearer {live.new_user('other@example.com')}"}
    assert httpx.get(url, headers=other).status_code == 404
    assert httpx.patch(url, json={"body": "x"}, headers=other).status_code == 404
    assert httpx.post(f"{url}/continue", headers=other).status_code == 404
    assert httpx.get(f"{live.url}/api/v1/drafts", headers=other).json() == []
    refused = httpx.patch(url, json={}, headers=live.auth)
    assert refused.status_code == 422
    assert "subject, body" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "status", "status": 529}, "overloaded"),
        ({"kind": "status", "status": 429}, "rate_limited"),
        ({"kind": "status", "status": 500}, "unavailable"),
        ({"kind": "slow_first_token", "seconds": 3}, "timeout"),
        ({"kind": "cut", "after_tokens": 0}, "unavailable"),
    ],
)
def test_a_miss_before_the_first_token_falls_to_the_next_model(
    live: LiveServer, fault: dict[str, Any], reason: str
) -> None:
    """529, 429, 5xx, a first token past the deadline or a connection cut before any text
    on the first model: the second writes the draft, the first is not retried, the fallback
    is counted by reason."""
    before = metric("roleferry_draft_fallbacks_total", model=FIRST, reason=reason)
    shape(live, {**fault, "model": FIRST})
    found = events(live)
    assert names(found) == ["start", "delta", "done"]
    assert found[0][1]["model"] == SECOND
    assert found[-1][1]["source"] == "model"
    assert stored(live, found[0][1]["draft_id"])["model"] == SECOND
    assert metric("roleferry_draft_fallbacks_total", model=FIRST, reason=reason) == before + 1
    assert sum(sandbox_calls(live).values()) == 2


def test_the_last_model_is_not_cut_by_the_first_token_deadline(live: LiveServer) -> None:
    """The last model's first token after the first-token deadline still makes the draft."""
    shape(
        live,
        {"kind": "status", "status": 529, "model": FIRST},
        {"kind": "slow_first_token", "seconds": 1.5, "model": SECOND},
    )
    found = events(live)
    assert found[0][1]["model"] == SECOND
    assert found[-1][1]["source"] == "model"


def test_after_the_chain_the_template_is_the_draft(live: LiveServer) -> None:
    """Every model overloaded: a complete draft from the template, marked source template."""
    shape(live, {"kind": "status", "status": 529, "times": None})
    before = metric("roleferry_drafts_total", source="template", outcome="complete")
    found = events(live)
    assert names(found) == ["start", "delta", "done"]
    done = found[-1][1]
    assert done["source"] == "template"
    assert done["model"] is None
    assert done["subject"] == "Product Manager at acme.com"
    assert done["body"].startswith("Hi Jane,")
    assert "billing product" in done["body"]
    draft = stored(live, done["draft_id"])
    assert (draft["status"], draft["source"]) == ("complete", "template")
    assert metric("roleferry_drafts_total", source="template", outcome="complete") == before + 1
    assert sandbox_calls(live) == {"529": 2}


def test_a_spend_limit_is_never_retried_nor_passed_down_the_chain(live: LiveServer) -> None:
    """A 429 `enforced_spend_limit_reached`: one call, then the template; no second model."""
    shape(live, {"kind": "status", "status": 429, "message": "enforced_spend_limit_reached"})
    found = events(live)
    assert found[-1][1]["source"] == "template"
    assert sandbox_calls(live) == {"429": 1}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "error_event"}, "error_event"),
        ({"kind": "stall", "seconds": 5}, "stall"),
        ({"kind": "cut"}, "connection_lost"),
        ({"kind": "malformed"}, "malformed_chunk"),
    ],
)
def test_a_break_after_the_first_token_is_incomplete_and_continues(
    live: LiveServer, fault: dict[str, Any], reason: str
) -> None:
    """After 5 tokens: an `incomplete` event with the partial text, stored; `continue` picks up
    from it (the partial text as prefill) and the whole draft is the model's."""
    before = metric("roleferry_draft_stream_breaks_total", model=FIRST, reason=reason)
    whole = events(live)[-1][1]
    shape(live, {**fault, "after_tokens": 5})
    found = events(live)
    assert names(found) == ["start", "delta", "incomplete"]
    incomplete = found[-1][1]
    assert incomplete["reason"] == reason
    assert incomplete["text"] == streamed(found)
    assert len(incomplete["text"].split()) == 5
    draft = stored(live, incomplete["draft_id"])
    assert (draft["status"], draft["incomplete_reason"]) == ("incomplete", reason)
    assert draft["partial_text"] == incomplete["text"]
    assert draft["body"] is None
    assert metric("roleferry_draft_stream_breaks_total", model=FIRST, reason=reason) == before + 1

    resumed = events(live, f"/api/v1/drafts/{incomplete['draft_id']}/continue", None)
    assert names(resumed) == ["start", "delta", "done"]
    assert (
        incomplete["text"].rstrip() + streamed(resumed)
        == f"Subject: {whole['subject']}\n\n" + (whole["body"])
    )
    done = resumed[-1][1]
    assert (done["subject"], done["body"]) == (whole["subject"], whole["body"])
    draft = stored(live, incomplete["draft_id"])
    assert (draft["status"], draft["source"], draft["body"]) == (
        "complete",
        "model",
        whole["body"],
    )
    again = httpx.post(
        f"{live.url}/api/v1/drafts/{incomplete['draft_id']}/continue", headers=live.auth
    )
    assert again.status_code == 409


def test_unknown_events_are_tolerated(live: LiveServer) -> None:
    """An event type nobody knows mid-stream: the draft completes as usual."""
    shape(live, {"kind": "unknown_event", "after_tokens": 3})
    found = events(live)
    assert names(found) == ["start", "delta", "done"]
    assert found[-1][1]["source"] == "model"


def test_a_failed_check_retries_once(live: LiveServer) -> None:
    """A placeholder in the first text: `restart`, then the second text is the draft."""
    before = metric("roleferry_draft_check_failures_total", reason="placeholder")
    shape(live, {"kind": "text", "text": "Subject: Hello\n\nHi [Name], about the role."})
    found = events(live)
    assert names(found) == ["start", "delta", "restart", "start", "delta", "done"]
    assert next(data for name, data in found if name == "restart")["reason"] == "placeholder"
    assert found[-1][1]["source"] == "model"
    assert "[Name]" not in found[-1][1]["body"]
    assert metric("roleferry_draft_check_failures_total", reason="placeholder") == before + 1


def test_two_failed_checks_give_the_template(live: LiveServer) -> None:
    """No subject twice: the template, after a `restart` that tells the client to drop the
    text it has."""
    shape(live, {"kind": "text", "text": "Hi Jane, a note with no subject.", "times": 2})
    found = events(live)
    assert names(found) == [
        "start", "delta", "restart", "start", "delta", "restart", "start", "delta", "done",
    ]  # fmt: skip
    assert found[-1][1]["source"] == "template"
    assert stored(live, found[-1][1]["draft_id"])["source"] == "template"


def test_the_daily_token_budget_is_a_429_with_the_reset_time(live: LiveServer) -> None:
    """Past the user's daily tokens: 429 in the error shape, with the next UTC midnight."""
    statuses = []
    for _ in range(12):
        response = httpx.post(f"{live.url}/api/v1/drafts", json=ASK, headers=live.auth, timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[0] == 201
    assert statuses[-1] == 429
    error = response.json()["error"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert error["code"] == "rate_limited"
    assert error["details"]["reset_at"] == tomorrow
    assert error["details"]["budget_tokens"] == 2000
    assert int(response.headers["retry-after"]) > 0


def test_bad_input_says_what_to_fix(live: LiveServer) -> None:
    """A recipient without a company: 422 naming what is missing; nothing stored."""
    response = httpx.post(
        f"{live.url}/api/v1/drafts",
        json={"recipient": {"name": "Jane"}, "aim": {"role": "PM"}},
        headers=live.auth,
    )
    assert response.status_code == 422
    assert "company or domain" in response.json()["error"]["message"]
    assert httpx.get(f"{live.url}/api/v1/drafts", headers=live.auth).json() == []


@pytest.mark.parametrize("nul", ["\x00"])
def test_on_postgresql_drafts_break_continue_and_refuse_nul_edits(
    postgres_url: str, tmp_path: Path, nul: str
) -> None:
    """PostgreSQL: a NUL in the input stays out of stored text, a broken stream is stored and
    continued (of two continues at once, one wins, the other is a 409), and an edit with a
    NUL is a 422, not a database error."""
    ask = {**ASK, "recipient": {**ASK["recipient"], "title": f"VP{nul}Product"}}
    with live_server(
        tmp_path, database_url=postgres_url, anthropic_models=FIRST, draft_stall_s=0.5
    ) as live:
        shape(live, {"kind": "cut", "after_tokens": 3})
        incomplete = events(live, body=ask)[-1][1]
        assert stored(live, incomplete["draft_id"])["status"] == "incomplete"
        resume = f"{live.url}/api/v1/drafts/{incomplete['draft_id']}/continue"
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda _: httpx.post(resume, headers=live.auth, timeout=30), range(2))
            )
        assert sorted(a.status_code for a in answers) == [200, 409]
        done = next(a for a in answers if a.status_code == 200).json()
        assert (done["status"], done["source"]) == ("complete", "model")
        done["draft_id"] = done["id"]
        url = f"{live.url}/api/v1/drafts/{done['draft_id']}"
        refused = httpx.patch(url, json={"body": f"a{nul}b"}, headers=live.auth)
        assert refused.status_code == 422
        assert stored(live, done["draft_id"])["status"] == "complete"


def test_cli_prints_the_draft_as_it_streams(live: LiveServer) -> None:
    """`roleferry draft --to … --company … --role …` prints the model's text and its id."""
    from typer.testing import CliRunner

    from roleferry.cli import app

    args = ["draft", "--to", "Jane Doe", "--company", "acme.com", "--role", "Product Manager"]
    args += ["--server", live.url, "--api-key", live.key]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Subject: About the Product Manager role at acme.com" in result.stdout
    assert "Hi Jane," in result.stdout
    listed = httpx.get(f"{live.url}/api/v1/drafts", headers=live.auth).json()
    assert f"draft {listed[0]['id']} (model)" in result.stderr


def test_a_client_gone_mid_stream_leaves_the_text_so_far(slow: LiveServer) -> None:
    """The client hangs up after the first delta, while the model pauses: the draft is
    stored `incomplete` (client_gone) with the text the model had written by then, and can
    be continued."""
    slow.reset()
    live = slow
    shape(live, {"kind": "stall", "after_tokens": 3, "seconds": 25})
    headers = {**live.auth, "accept": "text/event-stream"}
    with httpx.stream(
        "POST", f"{live.url}/api/v1/drafts", json=ASK, headers=headers, timeout=30
    ) as response:
        lines = response.iter_lines()
        start = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert next(lines) == ""
        assert next(lines) == "event: delta"
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    draft = stored(live, start["draft_id"])
    while draft["status"] == "streaming" and datetime.now(UTC) < deadline:
        time.sleep(0.1)  # within the user's rate limit
        draft = stored(live, start["draft_id"])
    assert (draft["status"], draft["incomplete_reason"]) == ("incomplete", "client_gone")
    assert draft["partial_text"].startswith("Subject: ")
    assert (
        httpx.post(
            f"{live.url}/api/v1/drafts/{start['draft_id']}/continue", headers=live.auth, timeout=30
        ).json()["status"]
        == "complete"
    )


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose streams may pause for long (stall 30 s): time to act mid-stream."""
    with live_server(
        tmp_path_factory.mktemp("drafts-slow"),
        anthropic_models=FIRST,
        anthropic_rate_limit="100000/60",
        draft_stall_s=30.0,
        draft_deadline_s=60.0,
    ) as live:
        yield live


def test_an_edit_while_the_draft_streams_is_a_409_that_says_to_wait(slow: LiveServer) -> None:
    """PATCH between two deltas: 409 naming the draft and what to do, nothing stored; once
    the stream has ended (here broken), the same edit is kept."""
    slow.reset()
    shape(slow, {"kind": "stall", "after_tokens": 3, "seconds": 2})
    headers = {**slow.auth, "accept": "text/event-stream"}
    with httpx.stream(
        "POST", f"{slow.url}/api/v1/drafts", json=ASK, headers=headers, timeout=30
    ) as response:
        lines = response.iter_lines()
        start = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        url = f"{slow.url}/api/v1/drafts/{start['draft_id']}"
        assert stored(slow, start["draft_id"])["status"] == "streaming"
        refused = httpx.patch(url, json={"body": "Mine."}, headers=slow.auth)
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "conflict"
        assert error["message"] == (
            f"draft {start['draft_id']!r} is still being written; edit it once it ends"
        )
        draft = stored(slow, start["draft_id"])
        assert (draft["status"], draft["edited_body"]) == ("streaming", None)
        rest = [line for line in lines if line.startswith("event: ")]
    assert rest[-1] == "event: incomplete"
    edited = httpx.patch(url, json={"body": "Mine."}, headers=slow.auth)
    assert edited.status_code == 200
    assert (edited.json()["status"], edited.json()["edited_body"]) == ("incomplete", "Mine.")


def test_a_failure_of_ours_mid_stream_ends_with_an_error_event(slow: LiveServer) -> None:
    """The database loses the drafts table while a stream pauses: when the stream ends and
    its result cannot be stored, the client gets an `error` event (code and message, no
    internals) rather than a cut connection; the run stores nothing more."""
    slow.reset()
    shape(slow, {"kind": "stall", "after_tokens": 3, "seconds": 1})
    database = sqlite3.connect(slow.runtime.db.urls.sqlite_path, isolation_level=None)
    headers = {**slow.auth, "accept": "text/event-stream"}
    try:
        with httpx.stream(
            "POST", f"{slow.url}/api/v1/drafts", json=ASK, headers=headers, timeout=30
        ) as response:
            lines = response.iter_lines()
            start = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
            assert stored(slow, start["draft_id"])["status"] == "streaming"
            database.execute("ALTER TABLE drafts RENAME TO drafts_away")
            text = "\n".join(lines)
    finally:
        database.execute("ALTER TABLE drafts_away RENAME TO drafts")
        database.close()
    last = text.strip().split("\n\n")[-1].split("\n")
    assert last[0] == "event: error"
    assert json.loads(last[1][6:]) == {
        "code": "internal_error",
        "message": "the draft failed on our side; try again",
    }
    assert "event: incomplete" not in text
    assert stored(slow, start["draft_id"])["partial_text"] is None
