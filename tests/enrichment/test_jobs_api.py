"""Bulk enrichment through the API, the durable workflow, the real clients and the sandbox."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from roleferry.resilience.ratelimit import Window
from roleferry.sandbox.world import Person, World
from tests.support.live_server import LiveServer, live_server

WORLD = World(7)
TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("jobs"),
        apollo_rate_limit="100000/3600",
        enrichment_backoff_s=0.3,
        attempt_timeout_s=0.5,
    ) as live:
        yield live


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    server.reset()
    server.control("apollo", rate_limit={"limit": 100000, "period_s": 3600})
    server.runtime.clock = time.time
    return server


def people(start: int, count: int) -> list[Person]:
    return [p for c in WORLD.companies[start : start + 40] for p in c.people][:count]


def contacts(persons: list[Person]) -> list[dict[str, str]]:
    return [
        {"first_name": p.first_name, "last_name": p.last_name, "domain": p.company_domain}
        for p in persons
    ]


def create(
    live: LiveServer, body: dict[str, Any], key: str | None = None, **headers: str
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else live.auth
    return httpx.post(
        f"{live.url}/api/v1/enrichment-jobs", json=body, headers={**auth, **headers}, timeout=30
    )


def wait_done(
    live: LiveServer, job_id: str, key: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}"} if key else live.auth
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(
            f"{live.url}/api/v1/enrichment-jobs/{job_id}", headers=auth
        ).json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def results(live: LiveServer, job_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job_id}/results", headers=live.auth
    ).json()["results"]
    return rows


def test_a_job_is_accepted_runs_and_finds_right_emails(live: LiveServer) -> None:
    persons = people(0, 60)
    response = create(live, {"contacts": [*contacts(persons), {"first_name": "x"}]})
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/api/v1/enrichment-jobs/{job_id}"
    assert response.json()["rejected"][0]["line"] == 61
    job = wait_done(live, job_id)
    assert job["total"] == 60
    assert job["done"] == 60
    assert job["found"] + job["not_found"] == 60
    assert sum(job["by_provider"].values()) == job["found"]
    truth = {(p.first_name, p.last_name, p.company_domain): p.email for p in persons}
    rows = results(live, job_id)
    assert [r["line"] for r in rows] == list(range(1, 61))
    wrong = [
        r
        for r in rows
        if r["email"] and r["email"] != truth[(r["first_name"], r["last_name"], r["domain"])]
    ]
    assert wrong == []
    csv_text = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job_id}/results",
        headers={**live.auth, "Accept": "text/csv"},
    ).text
    assert csv_text.splitlines()[0].split(",") == [
        "line",
        "first_name",
        "last_name",
        "domain",
        "title",
        "linkedin_url",
        "email",
        "source",
        "confidence",
        "status",
        "verification",
        "reason",
    ]
    assert len(csv_text.splitlines()) == 61
    notes = httpx.get(f"{live.url}/api/v1/notifications", headers=live.auth).json()
    assert any(n["data"]["id"] == job_id for n in notes)


def test_unknown_people_are_not_found_at_once_and_duplicates_cost_nothing(live: LiveServer) -> None:
    persons = people(40, 10)
    body = {
        "contacts": contacts(persons) * 2
        + [{"first_name": "Zed", "last_name": "Nobody", "domain": "nowhere-x.io"}]
    }
    job = wait_done(live, create(live, body).json()["id"])
    rows = results(live, job["id"])
    nobody = rows[-1]
    assert nobody["status"] == "not_found"
    assert "no provider" in nobody["reason"]
    assert all("duplicate of line" in (r["reason"] or "") for r in rows[10:20]), rows[10:20]
    calls = live.calls("apollo") + live.calls("clay") + live.calls("hunter")
    again = wait_done(live, create(live, {"contacts": contacts(persons)}).json()["id"])
    assert again["found"] == sum(1 for r in rows[:10] if r["status"] == "found")
    assert live.calls("apollo") + live.calls("clay") + live.calls("hunter") == calls, (
        "people enriched recently by the same user cost no second provider call"
    )


def test_idempotency_key_returns_the_same_job(live: LiveServer) -> None:
    body = {"contacts": contacts(people(60, 3))}
    first = create(live, body, **{"Idempotency-Key": "import-42"})
    second = create(live, body, **{"Idempotency-Key": "import-42"})
    assert first.json()["id"] == second.json()["id"]
    other = create(live, {"contacts": contacts(people(63, 3))}, **{"Idempotency-Key": "import-42"})
    assert other.status_code == 409


def test_jobs_are_private(live: LiveServer) -> None:
    job_id = create(live, {"contacts": contacts(people(70, 2))}).json()["id"]
    stranger = live.new_user(f"stranger-{time.time()}@example.com")
    for path in ("", "/results", "/events"):
        response = httpx.get(
            f"{live.url}/api/v1/enrichment-jobs/{job_id}{path}",
            headers={"Authorization": f"Bearer {stranger}"},
        )
        assert response.status_code == 404
    assert (
        httpx.post(
            f"{live.url}/api/v1/enrichment-jobs/{job_id}/cancel",
            headers={"Authorization": f"Bearer {stranger}"},
        ).status_code
        == 404
    )


def test_a_spent_budget_makes_work_wait_without_429s(live: LiveServer) -> None:
    live.control("apollo", rate_limit={"limit": 4, "period_s": 2})
    providers = live.runtime.providers
    assert providers is not None
    providers.policies["apollo"].limiter.windows[:] = [Window(4, 2)]
    job = wait_done(
        live, create(live, {"contacts": contacts(people(120, 60))}).json()["id"], timeout=90
    )
    assert job["done"] == 60
    statuses = {s for by in live.stats()["apollo"].values() for s in by}
    assert "429" not in statuses


def test_transient_failures_retry_then_give_up_after_24_hours(live: LiveServer) -> None:
    for provider in ("apollo", "clay", "hunter"):
        live.control(provider, error_rate=1.0, error_status=503)
    job_id = create(live, {"contacts": contacts(people(200, 3))}).json()["id"]
    deadline = time.monotonic() + 60
    while live.calls("apollo") == 0:  # the job has asked, and been refused
        assert time.monotonic() < deadline, "the job never reached the providers"
        time.sleep(0.1)
    job = httpx.get(f"{live.url}/api/v1/enrichment-jobs/{job_id}", headers=live.auth).json()
    assert job["status"] == "running"
    assert job["done"] == 0, "transient failures keep contacts pending"
    live.runtime.clock = lambda: time.time() + 25 * 3600
    job = wait_done(live, job_id)
    assert job["status"] == "failed"
    assert job["failed"] == 3
    assert all("gave up 24 hours" in r["reason"] for r in results(live, job_id))


def test_server_sent_events_report_progress_then_done(live: LiveServer) -> None:
    job_id = create(live, {"contacts": contacts(people(240, 20))}).json()["id"]
    events = []
    with httpx.stream(
        "GET", f"{live.url}/api/v1/enrichment-jobs/{job_id}/events", headers=live.auth, timeout=60
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    assert events[0] == "progress"
    assert events[-1] == "done"


class Catcher(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    failures: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Catcher.received.append((dict(self.headers), body))
        self.send_response(Catcher.failures.pop(0) if Catcher.failures else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_callback_is_signed_per_standard_webhooks_and_retried(live: LiveServer) -> None:
    Catcher.received.clear()
    Catcher.failures[:] = [503]
    catcher = http.server.HTTPServer(("127.0.0.1", 0), Catcher)
    threading.Thread(target=catcher.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{catcher.server_port}/hooks/roleferry"
        job_id = create(live, {"contacts": contacts(people(260, 3)), "callback_url": url}).json()[
            "id"
        ]
        wait_done(live, job_id)
        deadline = time.monotonic() + 20
        while len(Catcher.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(Catcher.received) == 2, "the first delivery failed (503) and was retried"
        assert Catcher.received[0][0]["webhook-id"] == Catcher.received[1][0]["webhook-id"]
        headers, body = Catcher.received[-1]
        secret = httpx.get(f"{live.url}/api/v1/account/webhook-secret", headers=live.auth).json()[
            "secret"
        ]
        payload = Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})
        assert payload["type"] == "enrichment_job.finished"
        assert payload["data"]["id"] == job_id
        assert payload["data"]["total"] == 3
    finally:
        catcher.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "ftp://example.com/x",
        "http://user:pw@127.0.0.1/x",
    ],
)
def test_callbacks_to_private_addresses_are_refused(live: LiveServer, url: str) -> None:
    response = create(live, {"contacts": contacts(people(270, 1)), "callback_url": url})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "callback_url"


def test_empty_and_unreadable_uploads_are_422(live: LiveServer) -> None:
    url = f"{live.url}/api/v1/enrichment-jobs"
    for content in (b"", b"\x00\xff\xfe", b"name\nx\n"):
        response = httpx.post(
            url, headers=live.auth, files={"file": ("c.csv", content, "text/csv")}
        )
        assert response.status_code == 422
        assert response.json()["error"]["message"]
    ok = httpx.post(
        url,
        headers=live.auth,
        files={"file": ("c.csv", b"first_name,last_name,domain\nA,B,ab.io\nx,,\n", "text/csv")},
    )
    assert ok.status_code == 202
    assert ok.json()["rejected"][0]["line"] == 3
    assert create(live, {"nope": 1}).status_code == 422
