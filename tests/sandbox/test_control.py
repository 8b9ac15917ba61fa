"""The control plane: every fault a provider can show, the statistics that prove what a
client did, and reset."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.sandbox.control import parse_fault_spec
from tests.support.sandbox_server import SandboxServer


def match(
    sb: SandboxServer, timeout: float = 5, client: httpx.Client | None = None
) -> httpx.Response:
    return (client or httpx).post(  # type: ignore[no-any-return]
        f"{sb.base('apollo')}/api/v1/people/match",
        json={"id": "x"},
        headers={"x-api-key": SANDBOX_API_KEYS["apollo"]},
        timeout=timeout,
    )


def test_error_rate_and_status_in_the_providers_shape(sb: SandboxServer) -> None:
    sb.control("apollo", error_rate=1.0, error_status=502)
    response = match(sb)
    assert response.status_code == 502
    assert "error" in response.json()
    sb.control("hunter", error_rate=1.0, error_status=500)
    hunter = httpx.get(
        f"{sb.base('hunter')}/v2/domain-search", params={"domain": "a.io", "api_key": "x"}
    )
    assert hunter.status_code == 500
    assert hunter.json()["errors"][0]["code"] == 500


def test_partial_error_rate_fails_about_that_share(sb: SandboxServer) -> None:
    sb.control("apollo", error_rate=0.5, rate_limit={"limit": 1000, "period_s": 60})
    with httpx.Client() as client:
        statuses = [match(sb, client=client).status_code for _ in range(200)]
    assert 60 < statuses.count(500) < 140
    assert statuses.count(200) + statuses.count(500) == 200


def test_latency_and_jitter_delay_answers(sb: SandboxServer) -> None:
    sb.control("apollo", latency_ms=200, jitter_ms=50)
    started = time.perf_counter()
    assert match(sb).status_code == 200
    assert 0.2 <= time.perf_counter() - started < 2


def test_hang_never_answers(sb: SandboxServer) -> None:
    sb.control("apollo", hang=True)
    with pytest.raises(httpx.ReadTimeout):
        match(sb, timeout=0.3)


def test_down_is_503_and_malformed_is_invalid_json(sb: SandboxServer) -> None:
    sb.control("apollo", down=True)
    assert match(sb).status_code == 503
    sb.control("apollo", down=False, malformed=1.0)
    broken = match(sb)
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content)


def test_stats_count_by_endpoint_and_status_and_reset_clears(sb: SandboxServer) -> None:
    sb.control("apollo", error_rate=1.0, error_status=503)
    match(sb)
    match(sb)
    stats = sb.stats()["providers"]
    assert stats["apollo"]["/api/v1/people/match"] == {"503": 2}
    assert stats["hunter"] == {}
    httpx.post(f"{sb.url}/sandbox/_control/reset").raise_for_status()
    assert sb.stats()["providers"]["apollo"] == {}
    assert match(sb).status_code == 200
    assert httpx.get(f"{sb.url}/sandbox/_control").json()["apollo"]["error_rate"] == 0


def test_bad_control_requests_are_refused_clearly(sb: SandboxServer) -> None:
    url = f"{sb.url}/sandbox/_control"
    unknown = httpx.put(f"{url}/apollo", json={"error_rat": 1})
    assert unknown.status_code == 422
    assert "error_rat" in unknown.json()["error"]["message"]
    out_of_range = httpx.put(f"{url}/apollo", json={"error_rate": 2})
    assert out_of_range.status_code == 422
    assert "error_rate" in out_of_range.json()["error"]["message"]
    assert httpx.put(f"{url}/nobody", json={}).status_code == 404


def test_fault_specs_parse_like_the_control_plane() -> None:
    assert parse_fault_spec("apollo:error_rate=0.3") == ("apollo", {"error_rate": 0.3})
    assert parse_fault_spec("hunter:rate_limit=100/10;hang=true") == (
        "hunter",
        {"rate_limit": {"limit": 100, "period_s": 10.0}, "hang": True},
    )
    for bad in ("nobody:error_rate=1", "apollo", "apollo:error_rate=7"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_fault_spec(bad)
