"""ROLEFERRY_SEARCH_DEADLINE_S is the deadline of a search that names none."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.live_server import live_server


def test_the_configured_deadline_bounds_a_search_without_one(tmp_path: Path) -> None:
    """Every provider hanging, deadline 1.2 s configured: the answer (503) comes within it,
    not after the 5 s default; a request's own deadline_s still wins."""
    with live_server(tmp_path, search_deadline_s=1.2) as live:
        for provider in ("apollo", "clay", "hunter"):
            live.control(provider, hang=True)
        url = f"{live.url}/api/v1/contacts/search"
        started = time.monotonic()
        response = httpx.post(
            url, json={"domain": "domaur.com", "titles": ["VP"]}, headers=live.auth, timeout=30
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert elapsed < 2.5, elapsed
        started = time.monotonic()
        response = httpx.post(
            url,
            json={"domain": "domaur.com", "titles": ["CTO"], "deadline_s": 3},
            headers=live.auth,
            timeout=30,
        )
        assert time.monotonic() - started > 2.4
