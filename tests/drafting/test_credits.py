"""Drafts cost `ai_draft` credits: charged once when a model completes the draft, never for a
broken stream or the template, and a 402 before any model is called when the credits are not
there. Through our API on a real port with billing on, the SDK inside it calling the app's own
simulator; balances read through the credits API."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.drafting.test_drafts import ASK, FIRST, SECOND, events, names, sandbox_calls, shape
from tests.support.live_server import LiveServer, live_server

PRICE, START = 2, 5  # two drafts' worth, and one credit over


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("draft-credits"),
        billing="on",
        starting_credits=START,
        credit_prices=[f"ai_draft={PRICE}"],
        anthropic_models=f"{FIRST},{SECOND}",
        anthropic_rate_limit="100000/60",
        user_rate_limit="100000/60",
        draft_first_token_s=1.0,
        draft_stall_s=0.5,
        draft_deadline_s=10.0,
        draft_daily_tokens=0,
    ) as live:
        yield live


def fresh(server: LiveServer) -> LiveServer:
    server.reset()
    server.control("anthropic", rate_limit={"limit": 100000, "period_s": 60})
    server.key = server.new_user(f"u{datetime.now(UTC).timestamp()}@example.com")
    return server


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    """The server with clean faults, and a new user with the starting credits."""
    return fresh(server)


def balance(live: LiveServer) -> tuple[int, int]:
    got = httpx.get(f"{live.url}/api/v1/credits", headers=live.auth).json()
    return got["available"], got["reserved"]


def draft_charges(live: LiveServer) -> list[dict[str, Any]]:
    entries = httpx.get(f"{live.url}/api/v1/credits/ledger", headers=live.auth).json()["entries"]
    return [e for e in entries if e["postings"].get("spending:ai_draft")]


def post(live: LiveServer, path: str = "/api/v1/drafts", body: Any = ASK) -> httpx.Response:
    return httpx.post(f"{live.url}{path}", json=body, headers=live.auth, timeout=30)


def test_a_completed_draft_is_charged_once(live: LiveServer) -> None:
    """One model draft: the price spent once, referenced by the draft, nothing left held."""
    found = events(live)
    assert names(found) == ["start", "delta", "done"]
    draft_id = found[-1][1]["draft_id"]
    assert balance(live) == (START - PRICE, 0)
    charges = draft_charges(live)
    assert [(c["reference"], c["delta"]) for c in charges] == [(f"ai_draft:{draft_id}", 0)]
    assert charges[0]["postings"] == {"reserved": -PRICE, "spending:ai_draft": PRICE}


def test_a_broken_stream_costs_nothing_and_its_continue_is_the_one_charge(
    live: LiveServer,
) -> None:
    """An `error` event after 5 tokens: incomplete, nothing spent, the hold given back. The
    continue that completes it spends the price once; another continue is a 409, no charge."""
    shape(live, {"kind": "error_event", "after_tokens": 5})
    broken = events(live)
    assert names(broken) == ["start", "delta", "incomplete"]
    draft_id = broken[-1][1]["draft_id"]
    assert balance(live) == (START, 0)
    assert draft_charges(live) == []
    resumed = events(live, f"/api/v1/drafts/{draft_id}/continue", None)
    assert names(resumed) == ["start", "delta", "done"]
    assert balance(live) == (START - PRICE, 0)
    assert post(live, f"/api/v1/drafts/{draft_id}/continue", None).status_code == 409
    assert [c["reference"] for c in draft_charges(live)] == [f"ai_draft:{draft_id}"]


def test_the_template_is_free(live: LiveServer) -> None:
    """Every model overloaded: the template's draft costs nothing."""
    shape(live, {"kind": "status", "status": 529, "times": None})
    assert events(live)[-1][1]["source"] == "template"
    assert balance(live) == (START, 0)
    assert draft_charges(live) == []


def test_without_credits_a_402_before_any_model_is_called(live: LiveServer) -> None:
    """Two drafts spend four of five credits; the third is a 402 that says what to do, no
    model call, nothing stored. A continue without credits is a 402 and stays incomplete."""
    shape(live, {"kind": "cut", "after_tokens": 3})
    incomplete = events(live)[-1][1]
    assert incomplete["reason"] == "connection_lost"
    for _ in range(2):
        assert post(live).status_code == 201
    assert balance(live) == (START - 2 * PRICE, 0)
    live.reset()
    resume = f"/api/v1/drafts/{incomplete['draft_id']}/continue"
    for path, body in (("/api/v1/drafts", ASK), (resume, None)):
        refused = post(live, path, body)
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert error["code"] == "insufficient_credits"
        assert "POST /api/v1/checkout" in error["message"]
        assert error["details"] == {"balance": 1, "needed": PRICE, "kind": "ai_draft", "price": 2}
    assert sandbox_calls(live) == {}
    listed = httpx.get(f"{live.url}/api/v1/drafts", headers=live.auth).json()
    assert len(listed) == 3
    assert next(d for d in listed if d["id"] == incomplete["draft_id"])["status"] == "incomplete"
    assert balance(live) == (1, 0)


def test_two_drafts_at_once_on_the_last_credits_one_is_written(live: LiveServer) -> None:
    """Credits for two drafts, four asked at once: two written and charged, two 402s; the
    balance never goes below zero and nothing stays held."""
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(live), range(4)))
    assert sorted(a.status_code for a in answers) == [201, 201, 402, 402]
    assert balance(live) == (START - 2 * PRICE, 0)
    assert len(draft_charges(live)) == 2
    assert len(httpx.get(f"{live.url}/api/v1/drafts", headers=live.auth).json()) == 2


OUTCOMES = {
    "complete": None,
    "template": {"kind": "status", "status": 529, "times": None},
    "broken": {"kind": "error_event", "after_tokens": 4},
}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(st.sampled_from([*OUTCOMES, "continue"]), min_size=1, max_size=5))
def test_spent_credits_are_the_price_of_the_drafts_models_completed(
    server: LiveServer, steps: list[str]
) -> None:
    """Any run of drafts written, templated, broken and continued: a draft is charged exactly
    when a model completes it, once; a 402 exactly when the credits are short; nothing stays
    held."""
    live = fresh(server)
    completed: set[str] = set()
    incomplete: list[str] = []
    for step in steps:
        available = START - PRICE * len(completed)
        if step == "continue":
            if not incomplete:
                continue
            answer = post(live, f"/api/v1/drafts/{incomplete[-1]}/continue", None)
        else:
            live.reset()
            if OUTCOMES[step]:
                shape(live, OUTCOMES[step])  # type: ignore[arg-type]
            answer = post(live)
        if available < PRICE:
            assert answer.status_code == 402
            continue
        assert answer.status_code in (200, 201), answer.text
        draft = answer.json()
        if step == "continue" and draft["status"] != "incomplete":
            incomplete.pop()
        elif step != "continue" and draft["status"] == "incomplete":
            incomplete.append(draft["id"])
        if (draft["status"], draft["source"]) == ("complete", "model"):
            completed.add(draft["id"])
        assert balance(live) == (START - PRICE * len(completed), 0)
    assert sorted(c["reference"] for c in draft_charges(live)) == sorted(
        f"ai_draft:{d}" for d in completed
    )
