"""No secret reaches a log line: ours, uvicorn's, DBOS's or a library's."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from roleferry.logging import configure_logging
from tests.conftest import bearer, create_user, make_settings, start_client

APOLLO_KEY = "apollo-live-key-1234567890"
STRIPE_SECRET = "whsec_c2VjcmV0LWZvci10ZXN0cw"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    configure_logging("WARNING", "console")


def test_known_secrets_and_secret_shapes_are_masked(captured: io.StringIO) -> None:
    configure_logging("INFO", "json", [APOLLO_KEY], stream=captured)
    log = structlog.get_logger("test")
    log.info(
        "calling", url=f"https://api.hunter.io/v2/domain-search?domain=a.io&api_key={APOLLO_KEY}"
    )
    log.info(
        "headers", headers={"x-api-key": "abc", "Authorization": "Bearer rf_zzzzzzzzzzzzzzzzzzzzzz"}
    )
    log.info(f"body had api_key {APOLLO_KEY} inline")
    logging.getLogger("httpx").warning("HTTP Request: GET https://h/v2?api_key=plainsecret123 200")
    try:
        raise ValueError(f"provider said no to {APOLLO_KEY}")
    except ValueError:
        log.exception("failed")
    out = captured.getvalue()
    assert APOLLO_KEY not in out
    assert "plainsecret123" not in out
    assert "rf_zzzz" not in out
    assert '"abc"' not in out
    assert out.count("[REDACTED]") >= 6
    assert "domain=a.io" in out


def test_a_served_request_logs_no_key(tmp_path: Path, captured: io.StringIO) -> None:
    """Keys in settings, in Authorization headers and in errors never show in the server's logs."""
    settings = make_settings(
        tmp_path, apollo_api_key=APOLLO_KEY, stripe_webhook_secret=STRIPE_SECRET, log_level="DEBUG"
    )
    configure_logging("DEBUG", "json", settings.secret_values(), stream=captured)
    with start_client(settings) as client:
        key = create_user(client, "a@example.com")
        assert client.get("/api/v1/me", headers=bearer(key)).status_code == 200
        assert client.get("/api/v1/me", headers=bearer(key + "x")).status_code == 401
        structlog.get_logger("test").info("settings", settings=settings.model_dump())
    out = captured.getvalue()
    assert '"provider": "apollo"' in out
    assert '"mode": "live"' in out
    assert "request" in out
    for secret in (APOLLO_KEY, STRIPE_SECRET, key):
        assert secret not in out


def test_settings_repr_hides_keys(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        apollo_api_key=APOLLO_KEY,
        stripe_webhook_secret=f"{STRIPE_SECRET},whsec_other12345",
    )
    assert APOLLO_KEY not in repr(settings)
    assert STRIPE_SECRET not in str(settings)
    assert [s.get_secret_value() for s in settings.stripe_webhook_secret] == [
        STRIPE_SECRET,
        "whsec_other12345",
    ]
