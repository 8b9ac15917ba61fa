"""The console's rules over plain HTTP: sessions, CSRF, who sees what. The browser flows are in
test_console_browser.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roleferry.config import Settings
from roleferry.providers.catalog import SPECS
from roleferry.web.session import COOKIE
from tests.conftest import bearer, create_user, make_settings, start_client

CSV = b"first_name,last_name,domain\nAda,Lovelace,acme.com\n"


def sign_in(client: TestClient, key: str) -> str:
    """Signs the client in with `key`; returns the page's CSRF token."""
    page = client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post(
        "/signin",
        data={"signin_token": token.group(1), "api_key": key, "next": "/search"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/search").text)
    assert csrf is not None
    return csrf.group(1)


def test_pages_send_a_signed_out_browser_to_sign_in(client: TestClient) -> None:
    """Every page needs a session: without one, a redirect to /signin that comes back."""
    for path in ("/", "/search", "/jobs", "/notifications", "/admin/webhooks"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/signin?next="), path


def test_session_cookie_is_httponly_lax_and_ends_with_its_key(client: TestClient) -> None:
    """The cookie is HttpOnly and SameSite=Lax; revoking the key that opened it ends it."""
    key = create_user(client, "a@example.com")
    page = client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post(
        "/signin",
        data={"signin_token": token.group(1), "api_key": key},
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie, "plain HTTP on loopback: a Secure cookie would not come back"
    assert client.get("/", follow_redirects=False).status_code == 200
    key_id = client.get("/api/v1/api-keys", headers=bearer(key)).json()[0]["id"]
    client.delete(f"/api/v1/api-keys/{key_id}", headers=bearer(key))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_wrong_key_or_a_forged_form_does_not_sign_in(client: TestClient) -> None:
    """A bad key answers 401 with a message; a sign-in without the form's token is refused."""
    client.get("/signin")
    answer = client.post(
        "/signin", data={"signin_token": "forged", "api_key": "rf_nope"}, follow_redirects=False
    )
    assert answer.status_code == 401
    assert "expired" in answer.text
    page = client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/signin", data={"signin_token": token.group(1), "api_key": "rf_nope"})
    assert answer.status_code == 401
    assert "not valid" in answer.text


def test_forms_without_the_csrf_token_are_refused(client: TestClient) -> None:
    """Upload, search, cancel and sign-out all need the session's CSRF token."""
    key = create_user(client, "a@example.com")
    csrf = sign_in(client, key)
    for path, data in (
        ("/search", {"domain": "acme.com", "titles": "VP"}),
        ("/jobs/job_x/cancel", {}),
        ("/signout", {}),
    ):
        answer = client.post(path, data={**data, "csrf_token": "wrong"})
        assert answer.status_code == 403, path
        assert "CSRF" in answer.text
    refused = client.post("/jobs", files={"file": ("c.csv", CSV, "text/csv")})
    assert refused.status_code == 403
    accepted = client.post(
        "/jobs",
        data={"csrf_token": csrf},
        files={"file": ("c.csv", CSV, "text/csv")},
        follow_redirects=False,
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"].startswith("/jobs/")


def test_another_users_job_is_not_found_and_admin_pages_are_for_admins(
    client: TestClient,
) -> None:
    """Bob gets 404 on Alice's job page, events and CSV, and 403 on the webhook log."""
    alice = create_user(client, "alice@example.com")
    bob = create_user(client, "bob@example.com")
    job = client.post(
        "/api/v1/enrichment-jobs",
        files={"file": ("c.csv", CSV, "text/csv")},
        headers=bearer(alice),
    ).json()
    sign_in(client, bob)
    page = client.get(f"/jobs/{job['id']}")
    assert page.status_code == 404
    assert "not found" in page.text.lower()
    assert client.get(f"/jobs/{job['id']}/results.csv").status_code == 404
    assert client.get(f"/jobs/{job['id']}/events").status_code == 404
    assert client.get("/admin/webhooks").status_code == 403
    assert "Webhook log" not in client.get("/search").text, "no link to a page bob cannot open"


def test_admin_webhook_api_filters_counts_and_shows_one(client: TestClient) -> None:
    """The API the log page uses: filters by type, time and payload text, counts per status."""
    check_webhook_filters(client)


@pytest.mark.postgres
def test_admin_webhook_filters_and_console_sign_in_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    """The same filters (the payload cast to text, times with zones) and a console session on
    PostgreSQL."""
    with start_client(make_settings(tmp_path, database_url=postgres_url)) as client:
        check_webhook_filters(client)
        sign_in(client, create_user(client, "pg@example.com"))
        assert client.get("/admin/webhooks", follow_redirects=False).status_code == 403


def check_webhook_filters(client: TestClient) -> None:
    admin = create_user(client, "root@example.com", is_admin=True)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def store() -> None:
        from roleferry.webhooks.models import WebhookEvent

        async with runtime.db.write_session() as session:
            session.add_all(
                [
                    WebhookEvent(
                        provider="sendgrid",
                        event_id=f"e{i}",
                        type="delivered" if i % 2 else "bounce",
                        payload={"email": f"p{i}@acme.com", "note": "50%_off" if i == 3 else ""},
                        occurred_at=1.0,
                        status="failed" if i == 3 else "applied",
                    )
                    for i in range(6)
                ]
            )

    client.portal.call(store)  # type: ignore[union-attr]
    listed = client.get(
        "/api/v1/admin/webhook-events", params={"type": "bounce"}, headers=bearer(admin)
    ).json()
    assert {e["type"] for e in listed} == {"bounce"}
    assert len(listed) == 3
    matched = client.get(
        "/api/v1/admin/webhook-events", params={"q": "50%_"}, headers=bearer(admin)
    ).json()
    assert [e["event_id"] for e in matched] == ["e3"], "% and _ match themselves"
    counts = client.get("/api/v1/admin/webhook-events/counts", headers=bearer(admin)).json()
    assert counts == {"pending": 0, "applied": 5, "failed": 1}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for params, expected in (({"since": later}, 0), ({"since": earlier, "until": later}, 6)):
        listed = client.get(
            "/api/v1/admin/webhook-events", params=params, headers=bearer(admin)
        ).json()
        assert len(listed) == expected, params
    one = client.get(f"/api/v1/admin/webhook-events/{matched[0]['id']}", headers=bearer(admin))
    assert one.json()["payload"]["note"] == "50%_off"
    missing = client.get("/api/v1/admin/webhook-events/999999", headers=bearer(admin))
    assert missing.status_code == 404


def test_integrations_page_lists_every_provider_with_budget_units(client: TestClient) -> None:
    """The integrations page (was the dashboard at /): every provider, budgets with units."""
    key = create_user(client, "a@example.com")
    sign_in(client, key)
    page = client.get("/")
    assert page.status_code == 200
    for spec in SPECS:
        assert f"http://testserver/sandbox/{spec.name}" in page.text
    assert page.text.count('class="tag circuit-closed"') == len(SPECS), (
        "every provider is called through a policy, so each shows its breaker"
    )
    assert "100 left of 100 per hour" in page.text
    assert "15 left of 15 per second, 500 per minute" in page.text


def test_notifications_count_unread_and_open_marks_read(client: TestClient) -> None:
    """The bell's API: unread count, and reading one lowers it (only your own)."""
    alice = create_user(client, "alice@example.com")
    bob = create_user(client, "bob@example.com")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    me = client.get("/api/v1/me", headers=bearer(alice)).json()

    async def notify() -> None:
        from roleferry.notifications.models import Notification

        async with runtime.db.write_session() as session:
            session.add(
                Notification(user_id=me["id"], kind="enrichment_job.finished", title="t", data={})
            )

    client.portal.call(notify)  # type: ignore[union-attr]
    count = client.get("/api/v1/notifications/unread-count", headers=bearer(alice)).json()
    assert count == {"unread": 1}
    note = client.get("/api/v1/notifications", headers=bearer(alice)).json()[0]
    assert note["read_at"] is None
    path = f"/api/v1/notifications/{note['id']}/read"
    assert client.post(path, headers=bearer(bob)).status_code == 404
    assert client.post(path, headers=bearer(alice)).json()["read_at"] is not None
    assert client.get("/api/v1/notifications/unread-count", headers=bearer(alice)).json() == {
        "unread": 0
    }


def test_job_results_come_a_page_at_a_time(client: TestClient) -> None:
    """`limit` and `after_line` page the JSON rows (the job page shows the first ones); the
    CSV still holds every row."""
    key = create_user(client, "a@example.com")
    rows = "".join(f"P{i},Q{i},acme.com\n" for i in range(5))
    job = client.post(
        "/api/v1/enrichment-jobs",
        files={"file": ("c.csv", b"first_name,last_name,domain\n" + rows.encode(), "text/csv")},
        headers=bearer(key),
    ).json()
    path = f"/api/v1/enrichment-jobs/{job['id']}/results"
    page = client.get(path, params={"limit": 2, "after_line": 3}, headers=bearer(key)).json()
    assert [r["line"] for r in page["results"]] == [4, 5]
    csv = client.get(path, params={"limit": 2}, headers={**bearer(key), "Accept": "text/csv"})
    assert csv.text.count("\n") == 6, "header and five rows"
    refused = client.get(path, params={"limit": 0}, headers=bearer(key))
    assert refused.status_code == 422


def test_a_page_whose_data_fails_to_load_says_why_and_how_to_retry(client: TestClient) -> None:
    """A jobs page with a cursor that is not the user's shows the API's reason and a reload."""
    sign_in(client, create_user(client, "a@example.com"))
    page = client.get("/jobs", params={"cursor": "job_nope"})
    assert "This page could not load its data" in page.text
    assert "is not one of your jobs" in page.text
    assert "reload this page</a> to retry" in page.text


def test_a_bad_csv_upload_says_what_to_fix(client: TestClient) -> None:
    """The API's 422 for a CSV without the needed columns comes back as a readable fragment."""
    csrf = sign_in(client, create_user(client, "a@example.com"))
    answer = client.post(
        "/jobs",
        data={"csrf_token": csrf},
        files={"file": ("c.csv", b"name,company\nAda,acme\n", "text/csv")},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 422
    assert 'role="alert"' in answer.text
    assert "Could not do that" in answer.text


def test_sign_in_goes_back_only_to_a_path_of_this_server(client: TestClient) -> None:
    """`next` cannot send the browser to another site after signing in."""
    key = create_user(client, "a@example.com")
    for target, expected in (("/jobs", "/jobs"), ("//evil.example", "/"), ("/\\evil", "/")):
        client.cookies.clear()
        page = client.get("/signin")
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
        assert token is not None
        answer = client.post(
            "/signin",
            data={"signin_token": token.group(1), "api_key": key, "next": target},
            follow_redirects=False,
        )
        assert answer.headers["location"] == expected


def test_the_session_cookie_is_secure_behind_https(settings: Settings) -> None:
    """With an https public URL (TLS ended at a proxy) the cookie is marked Secure."""
    secure = settings.model_copy(update={"public_url": "https://console.example"})
    with start_client(secure) as client:
        key = create_user(client, "a@example.com")
        page = client.get("/signin")
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
        assert token is not None
        answer = client.post(
            "/signin",
            data={"signin_token": token.group(1), "api_key": key},
            follow_redirects=False,
        )
        assert "Secure" in answer.headers["set-cookie"]
