"""At DEBUG, nothing bound to a database statement reaches the logs: not the addresses, names
and callback URLs (with their tokens) stored, nor the rows read back, on SQLite or PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest

from roleferry.logging import configure_logging
from tests.support.live_server import live_server
from tests.support.webhooks import sendgrid_event, sendgrid_headers

SECRETS = (
    "Zebulon",
    "Quartermain",
    "tok_SECRETCALLBACK42",
    "victim.person@example.org",
    "owner@example.com",
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_debug_logs_carry_no_bound_values(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A job, a webhook and their reads at DEBUG: the log has statements but no values."""
    overrides = {}
    if backend == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    captured = io.StringIO()
    configure_logging("DEBUG", "console", stream=captured)
    try:
        with live_server(tmp_path, **overrides) as live:
            created = httpx.post(
                f"{live.url}/api/v1/enrichment-jobs",
                headers=live.auth,
                json={
                    "contacts": [
                        {"first_name": "Zebulon", "last_name": "Quartermain", "domain": "ex.io"}
                    ],
                    "callback_url": "http://127.0.0.1:9/hook?token=tok_SECRETCALLBACK42",
                },
            )
            assert created.status_code == 202
            job = created.json()["id"]
            body = json.dumps([sendgrid_event("delivered", "victim.person@example.org")])
            hook = httpx.post(
                f"{live.url}/webhooks/sendgrid",
                content=body,
                headers=sendgrid_headers(body.encode()),
            )
            assert hook.status_code == 200
            deadline = time.monotonic() + 30
            while True:
                state = httpx.get(f"{live.url}/api/v1/enrichment-jobs/{job}", headers=live.auth)
                if state.json()["status"] not in ("queued", "running"):
                    break
                assert time.monotonic() < deadline, "the job did not finish"
                time.sleep(0.1)
            assert "tok_SECRETCALLBACK42" in state.text, "the values were stored and read back"
    finally:
        configure_logging("WARNING", "console")
    text = captured.getvalue()
    assert "[debug" in text, "DEBUG was on"
    for value in SECRETS:
        assert value not in text, f"{value} reached the log"
