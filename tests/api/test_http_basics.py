"""HTTP basics every route shares: health, readiness, one error shape, body limits, request ids."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from roleferry.config import Settings
from tests.conftest import bearer, create_user, make_settings, start_client


def assert_error_shape(body: dict[str, object], code: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]


def test_healthz_and_readyz_report_a_launched_process(client: TestClient) -> None:
    """/healthz says the process is up; /readyz checks the database and DBOS."""
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "dbos": "launched"}


def test_openapi_lists_the_api(client: TestClient) -> None:
    """The API reference is served and documents the authenticated routes."""
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/api-keys" in paths
    assert "/healthz" in paths


def test_validation_error_has_the_error_shape(client: TestClient) -> None:
    """A body that fails validation is a 422 naming the field, in the one error shape."""
    key = create_user(client, "a@example.com")
    response = client.post("/api/v1/api-keys", json={"name": ""}, headers=bearer(key))
    assert response.status_code == 422
    body = response.json()
    assert_error_shape(body, "validation_error")
    assert body["error"]["details"][0]["field"] == "name"
    assert "name" in body["error"]["message"]


def test_malformed_json_is_a_422_in_the_error_shape(client: TestClient) -> None:
    key = create_user(client, "a@example.com")
    response = client.post(
        "/api/v1/api-keys",
        content=b'{"name": ',
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert_error_shape(response.json(), "validation_error")


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert_error_shape(missing.json(), "not_found")
    wrong = client.put("/healthz")
    assert wrong.status_code == 405
    assert_error_shape(wrong.json(), "method_not_allowed")


def test_oversize_body_is_refused_with_413(tmp_path: Path) -> None:
    """A body over the limit is refused before the route runs, in the error shape."""
    settings = make_settings(tmp_path, max_body_bytes=1024)
    with start_client(settings) as client:
        key = create_user(client, "a@example.com")
        big = '{"name": "' + "x" * 2048 + '"}'
        response = client.post(
            "/api/v1/api-keys",
            content=big,
            headers={**bearer(key), "content-type": "application/json"},
        )
        assert response.status_code == 413
        assert_error_shape(response.json(), "payload_too_large")
        assert response.json()["error"]["details"] == {"limit_bytes": 1024}
        assert client.get("/api/v1/api-keys", headers=bearer(key)).json()[0]["name"] == "default"
        assert len(client.get("/api/v1/api-keys", headers=bearer(key)).json()) == 1


def test_chunked_oversize_body_is_refused_with_413(tmp_path: Path) -> None:
    """A body without Content-Length is counted as it streams and refused past the limit."""
    settings = make_settings(tmp_path, max_body_bytes=1024)
    with start_client(settings) as client:
        key = create_user(client, "a@example.com")

        def chunks() -> object:
            yield b'{"name": "'
            for _ in range(10):
                yield b"x" * 512
            yield b'"}'

        response = client.post(
            "/api/v1/api-keys",
            content=chunks(),  # type: ignore[arg-type]
            headers={**bearer(key), "content-type": "application/json"},
        )
        assert response.status_code == 413
        assert_error_shape(response.json(), "payload_too_large")


def test_webhook_routes_have_their_own_larger_limit(tmp_path: Path) -> None:
    """Per-route limits: /webhooks/ takes bodies that the default limit refuses."""
    settings = make_settings(tmp_path, max_body_bytes=1024, webhook_max_body_bytes=4096)
    with start_client(settings) as client:
        body = b"x" * 2048
        assert client.post("/api/v1/api-keys", content=body).status_code == 413
        assert client.post("/webhooks/unknown", content=body).status_code == 404
        assert client.post("/webhooks/unknown", content=b"x" * 5000).status_code == 413


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    key = create_user(client, "a@example.com")
    client.get("/api/v1/api-keys/key_nope", headers=bearer(key))
    text = client.get("/metrics").text
    assert 'route="/api/v1/api-keys/{key_id}"' in text
    assert "key_nope" not in text
    assert key not in text


def test_the_start_up_heap_is_frozen_while_serving_and_released_at_shutdown(
    settings: Settings,
) -> None:
    """Full collections skip what start-up built (they set the webhook ack p99); a stopped
    app hands it back, so its objects can be collected."""
    with start_client(settings):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
