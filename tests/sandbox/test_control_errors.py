"""The control plane's errors in the API's shape, and one syntax for rate limits both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roleferry.sandbox.control import parse_fault_spec
from tests.conftest import make_settings, start_client


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    with start_client(make_settings(tmp_path)) as test_client:
        yield test_client  # type: ignore[misc]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/sandbox/_control/reset", "POST"),
        ("DELETE", "/sandbox/_control/apollo", "GET, PUT"),
        ("POST", "/sandbox/_control/stats", "GET"),
        ("PATCH", "/sandbox/_control", "GET"),
    ],
)
def test_a_wrong_method_is_405_method_not_allowed(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    """405 says method_not_allowed (not not_found), names the method and the allowed ones."""
    response = client.request(method, path)
    assert response.status_code == 405
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert method in error["message"]
    assert set(response.headers["allow"].split(", ")) - {"HEAD"} == set(allowed.split(", "))


def test_get_one_provider_returns_its_current_controls(client: TestClient) -> None:
    """GET /sandbox/_control/<provider> answers what PUT set; an unknown provider is 404."""
    assert client.get("/sandbox/_control/apollo").json()["error_rate"] == 0
    client.put("/sandbox/_control/apollo", json={"error_rate": 0.25, "latency_ms": 5})
    current = client.get("/sandbox/_control/apollo")
    assert current.status_code == 200
    assert current.json()["error_rate"] == 0.25
    assert current.json() == client.get("/sandbox/_control").json()["apollo"]
    missing = client.get("/sandbox/_control/nobody")
    assert missing.status_code == 404
    assert "apollo" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("100/10", {"limit": 100, "period_s": 10.0}),
        ("5/0.5", {"limit": 5, "period_s": 0.5}),
        ("7", {"limit": 7, "period_s": 1.0}),
        ({"limit": 3, "period_s": 60}, {"limit": 3, "period_s": 60.0}),
    ],
)
def test_rate_limit_is_written_the_same_way_as_fault_flags(
    client: TestClient, written: object, expected: dict[str, float]
) -> None:
    """`{"rate_limit": "100/10"}` means what `--fault apollo:rate_limit=100/10` means."""
    response = client.put("/sandbox/_control/hunter", json={"rate_limit": written})
    assert response.status_code == 200
    assert response.json()["rate_limit"] == expected
    if isinstance(written, str):
        assert parse_fault_spec(f"hunter:rate_limit={written}")[1]["rate_limit"] == expected


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"rate_limit": "ten/sec"}, "rate_limit", "LIMIT/SECONDS"),
        ({"rate_limit": "0/10"}, "rate_limit.limit", "greater than 0"),
        ({"error_rate": 2}, "error_rate", "less than or equal to 1"),
        ({"errors": 1}, "errors", "unknown fault setting"),
    ],
)
def test_validation_errors_use_the_api_shape(
    client: TestClient, body: dict[str, object], field: str, says: str
) -> None:
    """422 with details of field/reason, as every API route, never pydantic's loc/msg."""
    response = client.put("/sandbox/_control/apollo", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    detail = error["details"][0]
    assert detail["field"] == field
    assert says in detail["reason"]
    assert "loc" not in detail
    assert "msg" not in detail
    assert field.split(".")[0] in error["message"]
