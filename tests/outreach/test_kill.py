"""SIGKILL at random points across a run: every step sent exactly once or accounted for,
checked against the SendGrid simulator's mail log (a separate process, so it survives)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, start_roleferry

ENROLMENTS = 500
STEPS = 3
KILLS = 10
AMBIGUITY_S = 20


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sigkill_mid_run_sends_every_step_exactly_once_or_accounts_for_it(
    env: dict[str, str], tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """500 enrolments x 3 steps, 10 SIGKILLs at random moments: 0 duplicates, 0 mails to
    blocked addresses, and scheduled = sent + suppressed + stopped + cancelled + failed;
    on SQLite and on PostgreSQL."""
    if database == "postgresql":
        env = {**env, "ROLEFERRY_DATABASE_URL": request.getfixturevalue("postgres_url")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    sandbox = start_roleferry(["sandbox", "--target-url", url], env, tmp_path, sandbox_port)
    httpx.put(
        f"{sandbox_url}/sandbox/_control/sendgrid",
        # Events for a killed server's sends come back within seconds of its restart, as
        # SendGrid's would after a short outage; the 60 s default backoff made a loaded
        # machine's slow restarts outlast the compressed ambiguity window (sends went twice).
        json={"flush_interval_s": 0.1, "max_retry_backoff_s": 2},
    ).raise_for_status()
    env = {
        **env,
        "ROLEFERRY_SENDGRID_BASE_URL": f"{sandbox_url}/sandbox/sendgrid",
        "ROLEFERRY_SENDGRID_RATE_LIMIT": "100000/60",
        "ROLEFERRY_SEQUENCE_TICK_S": "0.05",
        "ROLEFERRY_USER_RATE_LIMIT": "1000/1",
        "ROLEFERRY_SEQUENCE_AMBIGUITY_S": str(AMBIGUITY_S),
    }
    rng = random.Random(14)
    server = start_roleferry(["serve"], env, tmp_path, port)
    try:
        key = (tmp_path / "local-api-key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}

        def api(method: str, path: str, **kw: Any) -> Any:
            response = httpx.request(method, f"{url}{path}", headers=auth, timeout=30, **kw)
            assert response.status_code < 300, response.text
            return response.json()

        sender = api(
            "POST",
            "/api/v1/senders",
            json={
                "email": "auto1@rf-send-01.com",
                "min_gap_s": 0,
                "jitter_s": 0,
                "daily_cap": 10_000,
                "warmup_start": 10_000,
            },
        )
        sequence = api(
            "POST",
            "/api/v1/sequences",
            json={
                "name": "kill",
                "sender_id": sender["id"],
                "steps": [
                    {"delay_s": 0 if n == 0 else 1.0, "subject": f"S{n}", "body": "b"}
                    for n in range(STEPS)
                ],
                "window": {"days": list(range(7)), "start_hour": 0, "end_hour": 24},
                "domain_hourly_limit": 10_000,
            },
        )
        emails = [f"k{i}@kill-test.org" for i in range(ENROLMENTS)]
        blocked = set(emails[:20])
        for email in blocked:
            api("POST", "/api/v1/blocklist", json={"email": email})
        run = api(
            "POST",
            f"/api/v1/sequences/{sequence['id']}/enrollments",
            json={"contacts": [{"email": e} for e in emails]},
        )
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.0))
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            server = start_roleferry(["serve"], env, tmp_path, port)
        deadline = time.monotonic() + 240
        while (state := api("GET", f"/api/v1/sequence-runs/{run['id']}"))["remaining"]:
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        mail = httpx.get(f"{sandbox_url}/sandbox/_control/sendgrid/mail").json()
        copies = Counter(
            (m["custom_args"]["enrollment_id"], m["custom_args"]["step"]) for m in mail
        )
        assert [k for k, n in copies.items() if n > 1] == [], "no step went twice"
        assert not blocked & {m["email"] for m in mail}, "no mail to a blocked address"
        sends = state["sends"]
        assert sum(sends.values()) == ENROLMENTS * STEPS
        assert set(sends) <= {"sent", "suppressed", "stopped", "cancelled", "failed"}
        assert sends.get("sent", 0) == len(mail), (sends, len(mail))
        # The blocked 20 x 3, plus the steps after a `dropped` (an address SendGrid refused).
        assert sends.get("suppressed", 0) >= 20 * STEPS
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        sandbox.terminate()
        sandbox.wait(20)
