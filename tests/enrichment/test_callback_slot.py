"""A callback that keeps failing never holds its user's queue slot."""

from __future__ import annotations

import time
from pathlib import Path

from dbos import DBOS

from tests.conftest import free_port
from tests.enrichment.test_jobs_api import contacts, create, people, wait_done
from tests.support.live_server import live_server


def test_the_next_job_runs_while_the_last_ones_callback_is_retried(tmp_path: Path) -> None:
    """Job 1's callback URL refuses connections, so its delivery is retried (10 tries, 5 s
    apart and doubling); the same user's job 2 (the queue runs one job per user at a time)
    finishes meanwhile instead of waiting minutes behind those retries."""
    with live_server(tmp_path, apollo_rate_limit="100000/3600") as live:
        unreachable = f"http://127.0.0.1:{free_port()}/hook"
        first = create(
            live, {"contacts": contacts(people(700, 3)), "callback_url": unreachable}
        ).json()["id"]
        wait_done(live, first)
        second = create(live, {"contacts": contacts(people(710, 3))}).json()["id"]
        started = time.monotonic()
        assert wait_done(live, second, timeout=30)["done"] == 3
        waited = time.monotonic() - started
        callback = DBOS.get_workflow_status(f"{first}-callback")
        assert callback is not None
        assert callback.status == "PENDING", "job 1's callback was still being retried"
        assert waited < 15, waited
