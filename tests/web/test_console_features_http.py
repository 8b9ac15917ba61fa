"""The Drafts, Sequences and Credits pages over plain HTTP, against a live server and its
sandbox (Anthropic, SendGrid and Stripe simulators): sessions, CSRF, who sees what, and that
each form does what the API does. The browser flows are in test_console_browser.py."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from roleferry.sandbox.world import World
from tests.support.live_server import LiveServer, live_server
from tests.support.waiting import wait_for

PAGES = ("/drafts", "/drafts/drf_x", "/sequences", "/sequences/seq_x", "/enrollments/enr_x")
FORMS = (
    "/drafts",
    "/drafts/drf_x",
    "/drafts/drf_x/continue",
    "/senders",
    "/senders/sdr_x/pause",
    "/sequences",
    "/sequences/seq_x/enrollments",
    "/enrollments/enr_x/cancel",
    "/credits/checkout",
)
DRAFT_FORM = {"name": "Jane Doe", "title": "VP Product", "company": "Acme", "role": "PM"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("console_features"),
        sequence_tick_s=0.1,
        stripe_rate_limit="1000/1",
        anthropic_rate_limit="100000/60",
    ) as live:
        yield live


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    server.reset()
    server.control("anthropic", rate_limit={"limit": 100000, "period_s": 60})
    server.control("stripe", duplicate_rate=0.0)
    return server


def signed_in(live: LiveServer, key: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in with `key`, and its CSRF token."""
    client = httpx.Client(base_url=live.url, timeout=30, follow_redirects=True)
    form = client.get("/signin").text
    token = re.search(r'name="signin_token" value="([^"]+)"', form)
    assert token is not None
    answer = client.post(
        "/signin", data={"signin_token": token.group(1), "api_key": key}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/credits").text)
    assert csrf is not None
    return client, csrf.group(1)


def user(live: LiveServer) -> tuple[str, httpx.Client, str]:
    key = live.new_user(f"u{time.monotonic_ns()}@example.com")
    return (key, *signed_in(live, key))


def held_sequence(live: LiveServer, key: str) -> dict[str, Any]:
    """A one-step sequence through the API, from a paused sender: nothing is sent, so every
    enrolment stays active whatever the time."""
    auth = {"Authorization": f"Bearer {key}"}
    sender = httpx.post(
        f"{live.url}/api/v1/senders", json={"email": "me@rf-send-01.com"}, headers=auth
    ).json()
    httpx.post(f"{live.url}/api/v1/senders/{sender['id']}/pause", headers=auth)
    sequence: dict[str, Any] = httpx.post(
        f"{live.url}/api/v1/sequences",
        json={"name": "s1", "sender_id": sender["id"], "steps": [{"subject": "S", "body": "B"}]},
        headers=auth,
    ).json()
    return sequence


def test_the_new_pages_need_a_session_and_their_forms_the_csrf_token(live: LiveServer) -> None:
    """Signed out: a redirect to sign in. Signed in: every form refuses a wrong token."""
    with httpx.Client(base_url=live.url) as anonymous:
        for path in (*PAGES, "/credits"):
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/signin?next="), path
    _key, client, _csrf = user(live)
    for path in FORMS:
        answer = client.post(path, data={"csrf_token": "wrong"})
        assert answer.status_code == 403, path
        assert "CSRF" in answer.text, path
    nav = client.get("/credits").text
    for link in ('href="/drafts"', 'href="/sequences"', 'href="/credits" aria-current="page"'):
        assert link in nav


def test_a_draft_from_the_form_streams_opens_saves_an_edit_and_is_yours(
    live: LiveServer,
) -> None:
    """Asked for SSE the form streams the API's events; a plain post opens the stored draft;
    the edit is the API's PATCH; another user gets "not found"; bad input says what to fix."""
    key, client, csrf = user(live)
    form = {**DRAFT_FORM, "csrf_token": csrf}
    with client.stream(
        "POST", "/drafts", data=form, headers={"Accept": "text/event-stream"}
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    assert text.count("event: delta") > 1, "word by word"
    assert "event: done" in text
    plain = client.post("/drafts", data=form, follow_redirects=False)
    assert plain.status_code == 303
    draft_id = plain.headers["location"].removeprefix("/drafts/")
    assert draft_id.startswith("drf_")
    shown = client.get(f"/drafts/{draft_id}")
    stored = httpx.get(
        f"{live.url}/api/v1/drafts/{draft_id}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert stored["subject"] in shown.text.replace("&#39;", "'")
    saved = client.post(
        f"/drafts/{draft_id}",
        data={"csrf_token": csrf, "subject": "Hello", "body": "My edit"},
        headers={"HX-Request": "true"},
    )
    assert "Saved." in saved.text
    stored = httpx.get(
        f"{live.url}/api/v1/drafts/{draft_id}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert (stored["edited_subject"], stored["edited_body"]) == ("Hello", "My edit")
    listed = client.get("/drafts").text
    assert draft_id in listed
    assert "Hello" in listed
    blank = client.post(
        f"/drafts/{draft_id}",
        data={"csrf_token": csrf, "subject": " ", "body": ""},
        headers={"HX-Request": "true"},
    )
    assert blank.status_code == 422
    assert "Not saved" in blank.text
    no_role = client.post("/drafts", data={**form, "role": ""}, headers={"HX-Request": "true"})
    assert no_role.status_code == 422
    assert "aim.role" in no_role.text
    _other_key, other, _ = user(live)
    assert other.get(f"/drafts/{draft_id}").status_code == 404
    assert "Draft not found" in other.get(f"/drafts/{draft_id}").text
    assert draft_id not in other.get("/drafts").text
    assert "No drafts yet" in other.get("/drafts").text
    broken = other.get("/drafts", params={"before": draft_id}).text
    assert "This page could not load its data" in broken, "a cursor of someone else's draft"
    assert "reload this page</a> to retry" in broken


def test_a_sequence_from_the_forms_enrols_contacts_and_acts_on_them(live: LiveServer) -> None:
    """Sender, sequence and enrolment through the forms; the run's rejects shown; the
    enrolment's steps and timeline; pause, resume and cancel; another user sees none of it."""
    _key, client, csrf = user(live)
    assert "No senders yet" in client.get("/sequences").text
    added = client.post(
        "/senders",
        data={"csrf_token": csrf, "email": "me@rf-send-01.com", "min_gap_s": 0, "jitter_s": 0},
    )
    assert added.status_code == 200, added.text
    sender_id = re.search(r'<option value="(sdr_[^"]+)"', added.text)
    assert sender_id is not None
    made = client.post(
        "/sequences",
        data={
            "csrf_token": csrf,
            "name": "intro",
            "sender_id": sender_id.group(1),
            "subject_0": "Hi {{first_name}}",
            "body_0": "Hello",
            "delay_days_1": "2",
            "subject_1": "Again",
            "body_1": "Hello again",
            "delay_days_2": "2",
            "subject_2": "Last",
            "body_2": "Bye",
            "days": [str(d) for d in range(7)],
            "start_hour": "0",
            "end_hour": "24",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    sequence_path = made.headers["location"]
    paused = client.post("/senders/" + sender_id.group(1) + "/pause", data={"csrf_token": csrf})
    assert "paused</span> by user" in paused.text
    resumed = client.post("/senders/" + sender_id.group(1) + "/resume", data={"csrf_token": csrf})
    assert "sending</span>" in resumed.text
    unknown = client.post(
        "/sequences",
        data={
            "csrf_token": csrf,
            "name": "x",
            "sender_id": sender_id.group(1),
            "subject_0": "Hi {{nickname}}",
            "body_0": "B",
            "days": ["0"],
        },
        headers={"HX-Request": "true"},
    )
    assert unknown.status_code == 422
    assert "unknown variables" in unknown.text
    csv = "email,first_name\nann@example.org,Ann\nnot-an-email,X\n"
    enrolled = client.post(
        f"{sequence_path}/enrollments", data={"csrf_token": csrf, "contacts": csv}
    )
    assert enrolled.status_code == 200
    assert "Enrolled 1 contact; 1 left out" in enrolled.text
    assert "line 3" in enrolled.text
    enrollment_id = re.search(r'href="/enrollments/(enr_[^"]+)">ann@example.org', enrolled.text)
    assert enrollment_id is not None
    path = f"/enrollments/{enrollment_id.group(1)}"
    wait_for(lambda: "sent" in re.findall(r'class="tag st-(\w+)"', client.get(path).text))
    # Resuming sends the next step at once (the API's rule); the third one keeps it active.
    for action, status in (("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")):
        acted = client.post(f"{path}/{action}", data={"csrf_token": csrf})
        assert f'id="enrollment-status">{status}<' in acted.text, action
    ended = client.post(f"{path}/pause", data={"csrf_token": csrf}, headers={"HX-Request": "1"})
    assert ended.status_code == 409
    assert "has ended" in ended.text
    notes = client.get("/notifications").text
    note_id = re.search(r'/notifications/(\d+)/open"[^>]*>.*Your sequence run finished', notes)
    assert note_id is not None, "the run ended with its only enrolment"
    opened = client.post(
        f"/notifications/{note_id.group(1)}/open", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert opened.headers["location"].startswith(f"{sequence_path}?run=run_")
    assert 'href="/enrollments/' not in client.get(sequence_path, params={"status": "paused"}).text
    assert f'href="{path}"' in client.get(sequence_path, params={"status": "cancelled"}).text
    _other_key, other, _ = user(live)
    assert other.get(sequence_path).status_code == 404
    assert other.get(path).status_code == 404
    assert "Enrolment not found" in other.get(path).text
    assert "Sequence not found" in other.get(sequence_path).text
    assert "intro" not in other.get("/sequences").text


def test_enrol_from_search_prefills_the_chosen_sequence(live: LiveServer) -> None:
    """Search's "Enrol" carries the person: the list offers each sequence, whose page has
    the person's CSV row ready."""
    key, client, _csrf = user(live)
    auth = {"Authorization": f"Bearer {key}"}
    sequence = held_sequence(live, key)
    listed = httpx.get(f"{live.url}/api/v1/sequences", headers=auth).json()
    assert [s["id"] for s in listed] == [sequence["id"]]
    person = {"email": "ada@acme.com", "first_name": "Ada", "last_name": "L", "company": "acme.com"}
    choice = client.get("/sequences", params=person).text
    assert "Choose the sequence to enrol ada@acme.com in" in choice
    link = re.search(r'href="(/sequences/seq_[^"#]+)#enrol-title"', choice)
    assert link is not None
    ready = client.get(link.group(1).replace("&amp;", "&")).text
    assert "email,first_name,last_name,company,title\nada@acme.com,Ada,L,acme.com,\n" in ready


def test_credits_are_bought_through_checkout_and_confirmed_on_return(live: LiveServer) -> None:
    """Buy goes to the sandbox's hosted page (the same one for a repeated click); paying
    there returns to the console, which confirms the session: +100 credits, a purchase entry."""
    _key, client, csrf = user(live)
    before = client.get("/credits").text
    available = int(re.search(r'id="available">(\d+)<', before).group(1))  # type: ignore[union-attr]
    form = {"csrf_token": csrf, "pack": "small", "idempotency_key": "k1-small"}
    bought = client.post("/credits/checkout", data=form, follow_redirects=False)
    again = client.post("/credits/checkout", data=form, headers={"HX-Request": "true"})
    assert bought.status_code == 303
    hosted = bought.headers["location"]
    assert hosted.startswith(f"{live.url}/sandbox/stripe/pay/cs_")
    assert again.headers["HX-Redirect"] == hosted, "the same key is the same checkout"
    paid = httpx.post(hosted, data={"card_number": "4242424242424242"})
    assert paid.status_code == 303
    back = client.get(paid.headers["location"])
    assert "/credits?checkout=cs_" in str(back.url)
    assert "Payment received: 100 credits added." in back.text
    assert f'id="available">{available + 100}<' in back.text
    assert "purchase" in back.text
    missing = client.post(
        "/credits/checkout", data={**form, "pack": "huge"}, headers={"HX-Request": "true"}
    )
    assert missing.status_code == 404
    assert "small" in missing.text
    assert "no pack" in missing.text


def test_search_refresh_asks_the_providers_again(live: LiveServer) -> None:
    """The same search comes from the cache; with "Refresh" ticked, from the providers."""
    _key, client, csrf = user(live)
    form = {"csrf_token": csrf, "domain": "acme.com", "titles": "VP"}
    hx = {"HX-Request": "true"}
    assert "Fresh from the providers" in client.post("/search", data=form, headers=hx).text
    assert "From the cache" in client.post("/search", data=form, headers=hx).text
    calls = live.calls("apollo")
    fresh = client.post("/search", data={**form, "refresh": "1"}, headers=hx).text
    assert "Fresh from the providers" in fresh
    assert live.calls("apollo") > calls


def test_a_sequences_enrolments_come_a_page_at_a_time(live: LiveServer) -> None:
    """100 enrolments a page; "Next" carries the filter and the last one shown."""
    key, client, csrf = user(live)
    sequence = held_sequence(live, key)
    csv = "email\n" + "".join(f"p{i:03d}@example.org\n" for i in range(101))
    path = f"/sequences/{sequence['id']}"
    client.post(f"{path}/enrollments", data={"csrf_token": csrf, "contacts": csv})
    first = client.get(path, params={"status": "active"}).text
    assert first.count('href="/enrollments/') == 100
    after = re.search(r'href="[^"?]+\?status=active&amp;after=(enr_[^"&]+)">Next 100<', first)
    assert after is not None
    second = client.get(path, params={"status": "active", "after": after.group(1)}).text
    assert second.count('href="/enrollments/') == 1
    assert "Next 100" not in second


def test_enrol_the_contacts_an_enrichment_job_found(live: LiveServer) -> None:
    """The enrol form's job choice sends the API's `enrichment_job_id`: the job's found
    contacts are enrolled."""
    key, client, csrf = user(live)
    auth = {"Authorization": f"Bearer {key}"}
    people = [(p, c.domain) for c in World(7).companies[:3] for p in c.people][:4]
    contacts = [
        {"first_name": p.first_name, "last_name": p.last_name, "domain": domain}
        for p, domain in people
    ]
    job = httpx.post(
        f"{live.url}/api/v1/enrichment-jobs", json={"contacts": contacts}, headers=auth
    ).json()
    path = f"{live.url}/api/v1/enrichment-jobs/{job['id']}"

    def finished() -> dict[str, Any] | None:
        got: dict[str, Any] = httpx.get(path, headers=auth).json()
        return None if got["status"] in ("queued", "running") else got

    done = wait_for(finished, 60)
    assert done["found"] > 0
    sequence = held_sequence(live, key)
    form = client.get(f"/sequences/{sequence['id']}").text
    assert f'<option value="{job["id"]}">' in form
    enrolled = client.post(
        f"/sequences/{sequence['id']}/enrollments",
        data={"csrf_token": csrf, "enrichment_job_id": job["id"]},
    )
    noun = "contact" if done["found"] == 1 else "contacts"
    assert f"Enrolled {done['found']} {noun}" in enrolled.text


def test_a_sequence_with_an_ai_step_from_the_form(live: LiveServer) -> None:
    """The form's AI-draft step becomes the API's `ai_draft`; a step it cannot send is a 422
    naming the step and the field; the sequence's page lists the AI step, and an enrolment
    whose draft broke twice says it waits for it, with the draft to edit linked."""
    key, client, csrf = user(live)
    auth = {"Authorization": f"Bearer {key}"}
    sender = httpx.post(
        f"{live.url}/api/v1/senders", json={"email": "me@rf-send-01.com"}, headers=auth
    ).json()
    form = client.get("/sequences").text
    assert 'name="kind_0" value="ai_draft"' in form
    assert 'name="role_2"' in form
    base = {
        "csrf_token": csrf,
        "name": "ai intro",
        "sender_id": sender["id"],
        "days": [str(d) for d in range(7)],
        "start_hour": "0",
        "end_hour": "24",
    }
    ai_step = {
        "kind_0": "ai_draft",
        "role_0": "Data Engineer",
        "about_0": "I built the pipelines at Initech",
        "links_0": "https://example.org/cv\n\nhttps://example.org/work\n",
        "tone_0": "direct",
        "length_0": "90",
    }
    hx = {"HX-Request": "true"}
    for fields, said in (
        ({**ai_step, "role_0": "  "}, "step 1: give the AI draft a role"),
        ({**ai_step, "length_0": "1000"}, "step 1: the AI draft&#39;s length: Input should be"),
        ({**ai_step, "tone_0": "shouty"}, "step 1: the AI draft&#39;s tone: Input should be"),
        (
            {**ai_step, "links_0": "\n".join(f"https://e.org/{i}" for i in range(6))},
            "step 1: the AI draft&#39;s links: List should have at most 5 items",
        ),
        ({**ai_step, "subject_1": "Again", "body_1": ""}, "step 2: the body: String should"),
    ):
        refused = client.post("/sequences", data={**base, **fields}, headers=hx)
        assert refused.status_code == 422, fields
        assert said in refused.text, refused.text
    assert httpx.get(f"{live.url}/api/v1/sequences", headers=auth).json() == []
    made = client.post(
        "/sequences",
        data={
            **base,
            **ai_step,
            "delay_days_1": "2",
            "kind_1": "template",
            "subject_1": "Following up, {{first_name}}",
            "body_1": "Any thoughts?",
            "kind_2": "ai_draft",
            "role_2": "",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    sequence_path = made.headers["location"]
    steps = httpx.get(f"{live.url}/api/v1{sequence_path}", headers=auth).json()["steps"]
    assert steps == [
        {
            "delay_s": 0.0,
            "ai_draft": {
                "role": "Data Engineer",
                "about": "I built the pipelines at Initech",
                "links": ["https://example.org/cv", "https://example.org/work"],
                "tone": "direct",
                "length": 90,
            },
        },
        {"delay_s": 172800.0, "subject": "Following up, {{first_name}}", "body": "Any thoughts?"},
    ]
    page = client.get(sequence_path).text
    assert '<span class="tag st-ai">AI draft</span> <strong>Data Engineer</strong>, direct' in page
    assert "about 90 words: “I built the pipelines at Initech”" in page
    assert "<strong>Following up, {{first_name}}</strong>" in page
    assert "(1 AI-drafted)" in client.get("/sequences").text
    live.control("anthropic", stream_faults=[{"kind": "cut", "after_tokens": 3, "times": 2}])
    enrolled = client.post(
        f"{sequence_path}/enrollments",
        data={"csrf_token": csrf, "contacts": "email,first_name,company\nann@acme.org,Ann,Acme\n"},
    )
    assert "Enrolled 1 contact." in enrolled.text
    enrollment_id = re.search(r'href="/enrollments/(enr_[^"]+)">ann@acme.org', enrolled.text)
    assert enrollment_id is not None
    path = f"/enrollments/{enrollment_id.group(1)}"
    api = f"{live.url}/api/v1{path}"
    waiting = wait_for(
        lambda: (
            (e := httpx.get(api, headers=auth).json())["steps"][0]["draft_state"] == "incomplete"
            and e
        )
    )
    assert waiting["waiting_for"] == "draft"
    draft_id = waiting["steps"][0]["draft_id"]
    shown = client.get(path).text
    assert (
        f'waiting for its AI draft: <a href="/drafts/{draft_id}">edit the unfinished draft</a>'
        in shown
    )
    assert f'<a href="/drafts/{draft_id}">incomplete</a>' in shown
    assert client.get(f"/drafts/{draft_id}").status_code == 200
    assert "waiting for its AI draft" in client.get(f"{sequence_path}/enrollments").text
