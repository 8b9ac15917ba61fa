"""Every /api/v1 route is authenticated, and every resource is scoped to its owner."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.test_http_basics import assert_error_shape
from tests.conftest import bearer, create_user, make_settings, start_client


def api_v1_routes(client: TestClient) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith("/api/v1")
        for method in item
    ]


def test_every_api_v1_route_refuses_a_missing_or_wrong_key(client: TestClient) -> None:
    """No /api/v1 route answers without a valid key: 401, error shape, WWW-Authenticate."""
    routes = api_v1_routes(client)
    assert len(routes) >= 5
    for method, path in routes:
        url = path.replace("{key_id}", "key_x")
        for headers in ({}, bearer("rf_not-a-real-key"), {"Authorization": "Basic dXNlcjpwdw=="}):
            response = client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert_error_shape(response.json(), "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_stops_working(client: TestClient) -> None:
    key = create_user(client, "a@example.com")
    second = client.post("/api/v1/api-keys", json={"name": "ci"}, headers=bearer(key)).json()
    assert client.get("/api/v1/me", headers=bearer(second["key"])).status_code == 200
    revoked = client.delete(f"/api/v1/api-keys/{second['id']}", headers=bearer(key))
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/api/v1/me", headers=bearer(second["key"])).status_code == 401
    assert client.get("/api/v1/me", headers=bearer(key)).status_code == 200


def test_user_a_gets_404_on_user_bs_key(client: TestClient) -> None:
    """Another user's resource is indistinguishable from one that does not exist."""
    alice = create_user(client, "alice@example.com")
    bob = create_user(client, "bob@example.com")
    bobs_key = client.get("/api/v1/api-keys", headers=bearer(bob)).json()[0]["id"]

    for method in ("GET", "DELETE"):
        response = client.request(method, f"/api/v1/api-keys/{bobs_key}", headers=bearer(alice))
        assert response.status_code == 404
        assert_error_shape(response.json(), "not_found")
    missing = client.get("/api/v1/api-keys/key_doesnotexist", headers=bearer(alice))
    assert (
        missing.json()["error"]["message"].replace("key_doesnotexist", bobs_key)
        == (
            client.get(f"/api/v1/api-keys/{bobs_key}", headers=bearer(alice)).json()["error"][
                "message"
            ]
        )
    )
    assert client.get("/api/v1/me", headers=bearer(bob)).status_code == 200
    listed = client.get("/api/v1/api-keys", headers=bearer(alice)).json()
    assert bobs_key not in {k["id"] for k in listed}


def test_keys_are_stored_hashed(client: TestClient) -> None:
    from sqlalchemy import select

    from roleferry.users.models import ApiKey

    key = create_user(client, "a@example.com")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def stored() -> list[str]:
        async with runtime.db.session() as session:
            rows = await session.scalars(select(ApiKey))
            return [f"{r.key_hash}|{r.prefix}" for r in rows]

    rows = client.portal.call(stored)  # type: ignore[union-attr]
    assert rows
    assert all(key not in row for row in rows)


@pytest.mark.parametrize("is_admin", [False, True])
def test_only_admins_create_users(client: TestClient, is_admin: bool) -> None:
    caller = create_user(client, "caller@example.com", is_admin=is_admin)
    response = client.post(
        "/api/v1/users", json={"email": "new@example.com"}, headers=bearer(caller)
    )
    if not is_admin:
        assert response.status_code == 403
        assert_error_shape(response.json(), "forbidden")
        return
    assert response.status_code == 201
    new_key = response.json()["api_key"]["key"]
    assert client.get("/api/v1/me", headers=bearer(new_key)).json()["email"] == "new@example.com"
    again = client.post("/api/v1/users", json={"email": "NEW@example.com"}, headers=bearer(caller))
    assert again.status_code == 409
    assert_error_shape(again.json(), "conflict")


def test_key_changes_survive_a_busy_sqlite_writer(client: TestClient) -> None:
    """Another writer committing all the time (the webhook processor, heartbeats, the sequence
    dispatcher) must not make a key change fail: on SQLite a request that read and then writes
    in one transaction fails at once with "database is locked" if anyone committed between."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    key = create_user(client, "busy@example.com")
    stop = threading.Event()

    def keep_writing() -> None:
        connection = sqlite3.connect(runtime.db.urls.sqlite_path, timeout=10)
        connection.execute("CREATE TABLE IF NOT EXISTS busy_writer (n INTEGER)")
        while not stop.is_set():
            with connection:
                connection.execute("INSERT INTO busy_writer VALUES (1)")
            time.sleep(0.0005)
        connection.close()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        for _ in range(8):  # within the per-key rate limit
            created = client.post("/api/v1/api-keys", json={"name": "ci"}, headers=bearer(key))
            assert created.status_code == 201, created.text
            revoked = client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=bearer(key))
            assert revoked.status_code == 200, revoked.text
    finally:
        stop.set()
        writer.join()


def test_a_key_revoked_by_another_process_stops_working_within_the_cache_bound(
    tmp_path: Path,
) -> None:
    """A key this process checked lately is answered from its cache; revoked in the database
    by someone else (another process), it still works here until the entry ages out
    (`api_key_cache_s`), then not."""
    from sqlalchemy import update

    from roleferry.users.models import ApiKey, utcnow

    with start_client(make_settings(tmp_path, api_key_cache_s=2.0)) as client:
        key = create_user(client, "a@example.com")
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert client.get("/api/v1/me", headers=bearer(key)).status_code == 200

        async def revoke_elsewhere() -> None:
            async with runtime.db.write_session() as session:
                await session.execute(update(ApiKey).values(revoked_at=utcnow()))

        client.portal.call(revoke_elsewhere)  # type: ignore[union-attr]
        assert client.get("/api/v1/me", headers=bearer(key)).json()["email"] == "a@example.com"
        time.sleep(2.0)
        assert client.get("/api/v1/me", headers=bearer(key)).status_code == 401


def test_without_the_cache_a_revoked_key_stops_at_once_everywhere(tmp_path: Path) -> None:
    """`api_key_cache_s=0`: every request asks the database."""
    from sqlalchemy import update

    from roleferry.users.models import ApiKey, utcnow

    with start_client(make_settings(tmp_path, api_key_cache_s=0)) as client:
        key = create_user(client, "a@example.com")
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert client.get("/api/v1/me", headers=bearer(key)).status_code == 200

        async def revoke_elsewhere() -> None:
            async with runtime.db.write_session() as session:
                await session.execute(update(ApiKey).values(revoked_at=utcnow()))

        client.portal.call(revoke_elsewhere)  # type: ignore[union-attr]
        assert client.get("/api/v1/me", headers=bearer(key)).status_code == 401
