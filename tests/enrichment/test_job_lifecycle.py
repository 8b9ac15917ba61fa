"""A job's life beyond the happy path: listing, cancelling, failing, names with any character,
a crash between saving a job and starting it, and how far each found address is trusted."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from roleferry.db import Database
from roleferry.enrichment import bulk, service
from roleferry.enrichment.intake import Row
from roleferry.sandbox.world import World
from tests.enrichment.test_jobs_api import Catcher, contacts, create, people, results, wait_done
from tests.support.live_server import LiveServer, live_server
from tests.support.waiting import wait_for

WORLD = World(7)
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("lifecycle"),
        apollo_rate_limit="100000/3600",
        enrichment_backoff_s=0.3,
        attempt_timeout_s=5.0,
    ) as live:
        yield live


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    server.reset()
    server.control("apollo", rate_limit={"limit": 100000, "period_s": 3600})
    server.runtime.clock = time.time
    return server


def get(live: LiveServer, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else live.auth
    return httpx.get(f"{live.url}/api/v1/enrichment-jobs{path}", headers=auth, params=params)


def job(live: LiveServer, job_id: str, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = get(live, f"/{job_id}", key).json()
    return body


def user_id(live: LiveServer, key: str | None = None) -> str:
    auth = {"Authorization": f"Bearer {key}"} if key else live.auth
    uid: str = httpx.get(f"{live.url}/api/v1/me", headers=auth).json()["id"]
    return uid


def in_db(live: LiveServer, work: Any) -> Any:
    """Runs `work(database)` on the server's database from the test's own event loop."""

    async def run() -> Any:
        database = Database(live.runtime.settings.database_url)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def test_jobs_are_listed_newest_first_paged_filtered_and_private(live: LiveServer) -> None:
    """The list pages newest first with a cursor, filters by status, shows counts and waits,
    and shows a user only their own jobs."""
    key = live.new_user(f"lister-{time.time()}@example.com")
    made = [
        create(live, {"contacts": contacts(people(900 + i, 1))}, key=key).json()["id"]
        for i in range(5)
    ]
    for job_id in made:
        wait_done(live, job_id, key)
    first = get(live, "", key, limit=2).json()
    assert [j["id"] for j in first["jobs"]] == made[::-1][:2]
    second = get(live, "", key, limit=2, cursor=first["next_cursor"]).json()
    third = get(live, "", key, limit=2, cursor=second["next_cursor"]).json()
    assert [j["id"] for j in second["jobs"] + third["jobs"]] == made[::-1][2:]
    assert third["next_cursor"] is None
    listed = first["jobs"][0]
    assert listed["total"] == 1
    assert listed["done"] == 1
    assert listed["found"] + listed["not_found"] == 1
    assert listed["waiting_for"] is None
    assert ISO_Z.match(listed["created_at"])
    assert ISO_Z.match(listed["finished_at"])
    assert "rejected" not in listed
    assert get(live, "", key, status="cancelled").json() == {"jobs": [], "next_cursor": None}
    done = get(live, "", key, status=listed["status"]).json()["jobs"]
    assert {j["status"] for j in done} == {listed["status"]}
    assert made[0] not in [j["id"] for j in get(live, "").json()["jobs"]], "another user's"
    stranger_cursor = get(live, "", cursor=made[0])
    assert stranger_cursor.status_code == 404
    assert stranger_cursor.json()["error"]["details"]["field"] == "cursor"
    for bad in ({"limit": 0}, {"limit": 101}, {"status": "done"}):
        response = get(live, "", key, **bad)
        assert response.status_code == 422, bad
        assert response.json()["error"]["message"]


def test_a_queued_job_says_what_it_waits_for_and_can_be_cancelled(live: LiveServer) -> None:
    """A job queued behind the same user's running job names that job as what it waits for;
    cancelled while queued, it stays cancelled when its workflow comes round, and its callback
    says so once."""
    Catcher.received.clear()
    Catcher.failures.clear()
    catcher = http.server.HTTPServer(("127.0.0.1", 0), Catcher)
    threading.Thread(target=catcher.serve_forever, daemon=True).start()
    try:
        for provider in ("apollo", "clay", "hunter"):
            live.control(provider, latency_ms=200)
        key = live.new_user(f"waiter-{time.time()}@example.com")
        auth = {"Authorization": f"Bearer {key}"}
        big = create(live, {"contacts": contacts(people(1000, 60))}, key=key).json()["id"]
        wait_for(lambda: job(live, big, key)["status"] == "running", what="the big job to run")
        hook = f"http://127.0.0.1:{catcher.server_port}/hook"
        small = create(
            live, {"contacts": contacts(people(1100, 2)), "callback_url": hook}, key=key
        ).json()["id"]
        queued = job(live, small, key)
        assert queued["status"] == "queued"
        assert big in queued["waiting_for"]["reason"]
        assert queued["waiting_for"]["until"] is None
        cancelled = httpx.post(f"{live.url}/api/v1/enrichment-jobs/{small}/cancel", headers=auth)
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["cancelled"] == 2
        httpx.post(f"{live.url}/api/v1/enrichment-jobs/{big}/cancel", headers=auth)
        after = create(live, {"contacts": contacts(people(1120, 1))}, key=key).json()["id"]
        wait_done(live, after, key, timeout=30)
        assert job(live, small, key)["status"] == "cancelled"
        wait_for(lambda: Catcher.received, what="the callback")
        time.sleep(0.5)
        bodies = [json.loads(body) for _headers, body in Catcher.received]
        assert [b["data"]["id"] for b in bodies] == [small], "one callback, for the small job"
        assert bodies[0]["data"]["status"] == "cancelled"
        assert ISO_Z.match(bodies[0]["timestamp"])
        notes = httpx.get(f"{live.url}/api/v1/notifications", headers=auth).json()
        assert sum(n["data"]["id"] == small for n in notes) == 1
    finally:
        catcher.shutdown()


def test_cancel_closes_the_job_frees_the_slot_notifies_and_logs_no_error(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled job is `cancelled` with its unfinished contacts `cancelled` (none failed),
    a finished_at, a notification; the user's next job starts at once; no ERROR is logged."""
    caplog.set_level(logging.WARNING)
    for provider in ("apollo", "clay", "hunter"):
        live.control(provider, latency_ms=300)
    key = live.new_user(f"canceller-{time.time()}@example.com")
    auth = {"Authorization": f"Bearer {key}"}
    big = create(live, {"contacts": contacts(people(80, 200))}, key=key).json()["id"]
    wait_for(lambda: job(live, big, key)["status"] == "running", what="the job to run")
    nxt = create(live, {"contacts": contacts(people(1200, 2))}, key=key).json()["id"]
    assert job(live, nxt, key)["status"] == "queued"
    response = httpx.post(f"{live.url}/api/v1/enrichment-jobs/{big}/cancel", headers=auth)
    assert response.status_code == 200
    cancelled_at = time.monotonic()
    body = response.json()
    assert body["status"] == "cancelled"
    assert ISO_Z.match(body["finished_at"])
    assert body["failed"] == 0
    assert body["cancelled"] > 0
    assert body["cancelled"] + body["found"] + body["not_found"] == 200
    assert body["waiting_for"] is None
    assert body["estimated_completion"] is None
    # The cancelled chunk alone would take 20 Apollo batches plus ~200 Clay and Hunter calls
    # at 300 ms each: far longer than this bound.
    wait_done(live, nxt, key, timeout=20)
    assert time.monotonic() - cancelled_at < 20
    rows = results(LiveServer(live.url, live.runtime, key), big)
    assert {r["status"] for r in rows} <= {"found", "not_found", "cancelled"}
    assert sum(r["status"] == "cancelled" for r in rows) == body["cancelled"]
    later = job(live, big, key)
    assert later["status"] == "cancelled"
    assert later["cancelled"] == body["cancelled"], "nothing written over cancelled contacts"
    notes = httpx.get(f"{live.url}/api/v1/notifications", headers=auth).json()
    note = next(n for n in notes if n["data"]["id"] == big)
    assert note["data"]["status"] == "cancelled"
    assert "cancelled" in note["title"]
    again = httpx.post(f"{live.url}/api/v1/enrichment-jobs/{big}/cancel", headers=auth)
    assert again.status_code == 409
    assert "already cancelled" in again.json()["error"]["message"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_a_chunk_in_flight_never_writes_over_a_cancel(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the chunk not told to stop, its late save leaves the cancelled contacts
    cancelled: saves are conditional updates, not a merge of stale rows."""
    monkeypatch.setattr(bulk, "CANCEL_DB_CHECK_S", 3600.0)
    for provider in ("apollo", "clay", "hunter"):
        live.control(provider, latency_ms=3000)
    job_id = create(live, {"contacts": contacts(people(1300, 3))}).json()["id"]
    wait_for(lambda: job(live, job_id)["status"] == "running", what="the job to run")
    time.sleep(0.3)  # the chunk has read its contacts; its first call takes 3 s
    owner = user_id(live)
    in_db(live, lambda db: service.cancel(db, owner, job_id, time.time()))
    wait_for(lambda: live.calls("apollo") >= 1, what="the chunk's Apollo answer")
    time.sleep(1.0)
    rows = results(live, job_id)
    assert [r["status"] for r in rows] == ["cancelled"] * 3
    assert job(live, job_id)["status"] == "cancelled"


def test_names_with_any_character_round_trip(live: LiveServer) -> None:
    """Names with `|`, quotes, commas and non-Latin letters enrich and come back as sent."""
    odd = [
        {"first_name": "A|B", "last_name": "C|D", "domain": "pipe-example.io"},
        {"first_name": "A", "last_name": "B|C|D", "domain": "pipe-example.io"},
        {"first_name": 'Zoë "Z"', "last_name": "O'Brien, Jr.", "domain": "pipe-example.io"},
        {"first_name": "李", "last_name": "小龍", "domain": "pipe-example.io"},
        {"first_name": "A|B", "last_name": "C|D", "domain": "pipe-example.io"},
    ]
    done = wait_done(live, create(live, {"contacts": odd}).json()["id"])
    assert done["status"] in ("succeeded", "partially_succeeded")
    rows = results(live, done["id"])
    assert [(r["first_name"], r["last_name"]) for r in rows] == [
        (c["first_name"], c["last_name"]) for c in odd
    ]
    assert all(r["status"] in ("found", "not_found") for r in rows), rows
    assert rows[4]["reason"] == "duplicate of line 1"


def test_a_job_saved_but_never_started_runs_on_retry(live: LiveServer) -> None:
    """A crash after the job was committed and before it was enqueued leaves it queued; the
    same request with the same Idempotency-Key starts it."""
    persons = people(1400, 3)
    body = {"contacts": contacts(persons)}
    rows = [
        Row(i + 1, p.first_name, p.last_name, p.company_domain, None, None)
        for i, p in enumerate(persons)
    ]
    owner = user_id(live)

    async def save_only(database: Database) -> str:
        saved, created = await service.create(
            database, owner, service.JobRequest(rows, [], None), "crash-1"
        )
        assert created
        return saved.id

    job_id = in_db(live, save_only)
    time.sleep(1.0)
    assert job(live, job_id)["status"] == "queued", "nothing enqueued it"
    retry = create(live, body, **{"Idempotency-Key": "crash-1"})
    assert retry.status_code == 202
    assert retry.json()["id"] == job_id
    finished = wait_done(live, job_id)
    assert finished["done"] == 3
    again = create(live, body, **{"Idempotency-Key": "crash-1"})
    assert again.json()["id"] == job_id, "a retry of a finished job changes nothing"
    assert job(live, job_id)["status"] == finished["status"]


def test_an_upload_interrupted_midway_is_completed_by_the_retry(live: LiveServer) -> None:
    """Contacts are saved in chunks; a retry saves the ones a crash left unsaved, once."""
    persons = people(1500, 7)
    rows = [
        Row(i + 1, p.first_name, p.last_name, p.company_domain, None, None)
        for i, p in enumerate(persons)
    ]
    owner = user_id(live)

    async def partial(database: Database) -> str:
        saved, _ = await service.create(
            database, owner, service.JobRequest(rows[:4], [], None), "crash-2"
        )
        return saved.id

    job_id = in_db(live, partial)
    sqlite_path = live.runtime.urls.sqlite_path
    with sqlite3.connect(sqlite_path) as connection:
        digest = service.request_hash(service.JobRequest(rows, [], None))
        connection.execute(
            "UPDATE enrichment_jobs SET total = 7, request_hash = ? WHERE id = ?",
            (digest, job_id),
        )
    retry = create(live, {"contacts": contacts(persons)}, **{"Idempotency-Key": "crash-2"})
    assert retry.json()["id"] == job_id
    finished = wait_done(live, job_id)
    assert finished["total"] == finished["done"] == 7
    assert [r["line"] for r in results(live, job_id)] == list(range(1, 8))


def _pattern_company() -> Any:
    return next(c for c in WORLD.companies if WORLD.hunter_knows_pattern(c))


def test_a_pattern_guess_is_not_a_verified_person(live: LiveServer) -> None:
    """A made-up name at a domain whose pattern Hunter knows comes back as a `pattern` guess,
    a person a provider knows as `verified`; the CSV carries the column."""
    company = _pattern_company()
    known = next(p for p in people(0, 40) if WORLD.apollo_has_email(p))
    body = {
        "contacts": [
            {"first_name": "Ann", "last_name": "Nobody", "domain": company.domain},
            *contacts([known]),
        ]
    }
    done = wait_done(live, create(live, body).json()["id"])
    nobody, person = results(live, done["id"])
    assert nobody["verification"] == "pattern"
    assert nobody["source"] == "hunter"
    assert nobody["confidence"] >= 70
    assert person["verification"] == "verified"
    assert done["by_verification"] == {"pattern": 1, "verified": 1}
    csv_text = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{done['id']}/results",
        headers={**live.auth, "Accept": "text/csv"},
    ).text
    header, first = csv_text.splitlines()[:2]
    assert "verification" in header.split(",")
    assert ",pattern," in first


def test_verify_patterns_asks_hunters_verifier(live: LiveServer) -> None:
    """With verify_patterns, a guess whose mailbox does not exist is not_found, one that
    exists is verified."""
    company = _pattern_company()
    real = next(
        p
        for c in WORLD.companies
        if WORLD.hunter_knows_pattern(c) and not WORLD.clay_knows_company(c)
        for p in c.people
        if not WORLD.apollo_has_email(p)
        and not WORLD.hunter_lists(p)
        and WORLD.hunter_view(c, p.first_name, p.last_name).correct
        and not p.bounces
    )
    body = {
        "contacts": [
            {"first_name": "Ann", "last_name": "Nobody", "domain": company.domain},
            *contacts([real]),
        ],
        "verify_patterns": True,
    }
    key = live.new_user(f"verifier-{time.time()}@example.com")
    done = wait_done(live, create(live, body, key=key).json()["id"], key)
    assert done["verify_patterns"] is True
    nobody, person = results(LiveServer(live.url, live.runtime, key), done["id"])
    assert nobody["status"] == "not_found"
    assert nobody["email"] is None
    assert "does not exist" in nobody["reason"]
    assert person["status"] == "found"
    assert person["verification"] == "verified"
    assert person["email"] == real.email
    assert live.calls("hunter") >= 4, "two finder and two verifier calls"
    bad = create(live, {**body, "verify_patterns": "yes"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "verify_patterns"


def test_a_step_that_keeps_failing_fails_the_job_with_a_reason(tmp_path: Any) -> None:
    """An error inside a step is retried, and when it persists the job is `failed` with the
    reason and its owner notified, instead of staying `running` forever."""
    with live_server(tmp_path, apollo_rate_limit="100000/3600") as live:
        with sqlite3.connect(live.runtime.urls.sqlite_path) as connection:
            connection.execute("ALTER TABLE cache_entries RENAME TO cache_entries_away")
        started = time.monotonic()
        job_id = create(live, {"contacts": contacts(people(1600, 2))}).json()["id"]
        done = wait_done(live, job_id, timeout=60)
        assert time.monotonic() - started >= 1 + 2 + 4 - 0.5, "retried with backoff first"
        assert done["status"] == "failed"
        assert "cache_entries" in done["reason"]
        assert done["failed"] == 2
        assert done["pending"] == 0
        assert all(r["reason"].startswith("the job failed: ") for r in results(live, job_id))
        notes = httpx.get(f"{live.url}/api/v1/notifications", headers=live.auth).json()
        assert any(n["data"]["id"] == job_id and n["data"]["status"] == "failed" for n in notes)
        assert job_id in [j["id"] for j in get(live, "", status="failed").json()["jobs"]]


def test_a_step_error_that_clears_is_retried_and_the_job_succeeds(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A step error that goes away before the retries are spent only delays the job."""
    caplog.set_level(logging.WARNING)
    with live_server(tmp_path, apollo_rate_limit="100000/3600") as live:
        path = live.runtime.urls.sqlite_path
        with sqlite3.connect(path) as connection:
            connection.execute("ALTER TABLE cache_entries RENAME TO cache_entries_away")
        job_id = create(live, {"contacts": contacts(people(1700, 2))}).json()["id"]
        wait_for(
            lambda: any("automatically retried" in r.getMessage() for r in caplog.records),
            what="a failed attempt",
        )
        with sqlite3.connect(path) as connection:
            connection.execute("ALTER TABLE cache_entries_away RENAME TO cache_entries")
        done = wait_done(live, job_id, timeout=60)
        assert done["status"] in ("succeeded", "partially_succeeded"), done
        assert done["done"] == 2
        assert done["reason"] is None


@pytest.mark.postgres
def test_list_cancel_and_retry_hold_on_postgres(tmp_path: Any, postgres_url: str) -> None:
    """On PostgreSQL: chunked upload, listing, cancel semantics and the retry that starts a
    job saved but never enqueued, with two retries racing to save its contacts."""
    with live_server(tmp_path, database_url=postgres_url, apollo_rate_limit="100000/3600") as live:
        done = wait_done(live, create(live, {"contacts": contacts(people(1800, 3))}).json()["id"])
        assert done["done"] == 3
        for provider in ("apollo", "clay", "hunter"):
            live.control(provider, latency_ms=300)
        big = create(live, {"contacts": contacts(people(1810, 120))}).json()["id"]
        wait_for(lambda: job(live, big)["status"] == "running", what="the job to run")
        cancelled = httpx.post(
            f"{live.url}/api/v1/enrichment-jobs/{big}/cancel", headers=live.auth
        ).json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["failed"] == 0
        assert cancelled["cancelled"] > 0
        listed = get(live, "", limit=1).json()
        assert [j["id"] for j in listed["jobs"]] == [big]
        following = get(live, "", limit=1, cursor=listed["next_cursor"]).json()
        assert [j["id"] for j in following["jobs"]] == [done["id"]]
        live.reset()
        persons = [p for c in WORLD.companies[1950:2000] for p in c.people][:1200]
        assert len(persons) == 1200
        rows = [
            Row(i + 1, p.first_name, p.last_name, p.company_domain, None, None)
            for i, p in enumerate(persons)
        ]
        owner = user_id(live)

        async def save_racing(database: Database) -> list[str]:
            request = service.JobRequest(rows, [], None)
            made = await asyncio.gather(
                *(service.create(database, owner, request, "pg-crash") for _ in range(3))
            )
            return [saved.id for saved, _ in made]

        ids = in_db(live, save_racing)
        assert len(set(ids)) == 1
        retry = create(live, {"contacts": contacts(persons)}, **{"Idempotency-Key": "pg-crash"})
        assert retry.json()["id"] == ids[0]
        assert retry.json()["total"] == 1200
        queued = job(live, ids[0])
        assert queued["total"] == 1200
        assert queued["done"] + queued["pending"] == 1200
        assert [r["line"] for r in results(live, ids[0])] == list(range(1, 1201))
