"""Credits spent by the features that cost, through the API on a live server: a search with
no credits is a 402 that says how to buy; after buying a pack the same search goes through and
costs one credit per email found, with the unused hold released."""

from __future__ import annotations

from pathlib import Path

import httpx

from roleferry.sandbox.world import World
from tests.support.live_server import live_server

WORLD = World(7)


def test_search_without_credits_is_402_and_goes_through_after_buying(tmp_path: Path) -> None:
    """0 credits: 402 with balance and price; pay a pack; the search is charged what it found."""
    target = next(c for c in WORLD.companies if WORLD.apollo_knows_company(c))
    body = {"domain": target.domain, "titles": ["VP", "Head", "Engineer"], "limit": 10}
    with live_server(
        tmp_path, billing="on", starting_credits=0, apollo_rate_limit="1000/3600"
    ) as live:
        live.control("stripe", duplicate_rate=0.0)
        live.control("apollo", rate_limit={"limit": 1000, "period_s": 3600})
        search = f"{live.url}/api/v1/contacts/search"
        refused = httpx.post(search, json=body, headers=live.auth, timeout=15)
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert error["code"] == "insufficient_credits"
        assert error["details"] == {"balance": 0, "needed": 10, "kind": "email_found", "price": 1}
        assert "POST /api/v1/checkout" in error["message"]

        made = httpx.post(
            f"{live.url}/api/v1/checkout", json={"pack": "small"}, headers=live.auth, timeout=10
        ).json()
        paid = httpx.post(
            f"{live.url}/sandbox/stripe/pay/{made['session_id']}",
            data={"card_number": "4242424242424242"},
        )
        assert paid.status_code == 303
        confirmed = httpx.get(
            f"{live.url}/api/v1/checkout/{made['session_id']}", headers=live.auth, timeout=10
        ).json()
        assert confirmed["payment_status"] == "paid"

        def credits() -> dict[str, int]:
            got: dict[str, int] = httpx.get(
                f"{live.url}/api/v1/credits", headers=live.auth, timeout=10
            ).json()
            return got

        assert credits()["available"] == 100
        answer = httpx.post(search, json=body, headers=live.auth, timeout=15)
        assert answer.status_code == 200, answer.text
        found = sum(
            1 for c in answer.json()["contacts"] if c["email"] and c["email_status"] != "guessed"
        )
        assert found >= 1
        after = credits()
        assert (after["available"], after["reserved"]) == (100 - found, 0)
        cached = httpx.post(search, json=body, headers=live.auth, timeout=15)
        assert cached.json()["cached"] is True
        assert credits()["available"] == 100 - found, "a cached answer is free"
