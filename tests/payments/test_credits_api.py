"""`GET /api/v1/credits` and `GET /api/v1/credits/ledger`: the balance, and the caller's own
entries newest first, each with postings that sum to zero, paged by `before`."""

from __future__ import annotations

from fastapi.testclient import TestClient

from roleferry.payments.ledger import Ledger
from roleferry.runtime import Runtime
from tests.conftest import bearer, create_user


def _grant(client: TestClient, email: str, amounts: list[int]) -> str:
    """A user with these grants (after the starting one); returns the user's API key."""
    key = create_user(client, email)
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    me = client.get("/api/v1/credits", headers=bearer(key))
    assert me.status_code == 200
    user_id = client.get("/api/v1/me", headers=bearer(key)).json()["id"]

    async def post() -> None:
        for n, amount in enumerate(amounts):
            async with runtime.db.write_session() as session:
                await Ledger(session).grant(user_id, amount, f"goodwill:{user_id}:{n}")

    client.portal.call(post)  # type: ignore[union-attr]
    return key


def test_the_ledger_pages_newest_first_and_shows_only_your_entries(client: TestClient) -> None:
    """Starting grant plus five: 200 + 15 available; pages of two, newest first, every
    entry's postings summing to zero; another user's ledger holds only their own grant."""
    key = _grant(client, "ledger@example.com", [1, 2, 3, 4, 5])
    _grant(client, "other@example.com", [7])
    credits = client.get("/api/v1/credits", headers=bearer(key)).json()
    assert (credits["available"], credits["reserved"]) == (215, 0)
    seen: list[dict[str, object]] = []
    before = None
    while True:
        page = client.get(
            "/api/v1/credits/ledger",
            params={"limit": 2, **({"before": before} if before else {})},
            headers=bearer(key),
        ).json()
        seen += page["entries"]
        before = page["next_before"]
        if before is None:
            break
        assert len(page["entries"]) == 2
    assert [e["delta"] for e in seen] == [5, 4, 3, 2, 1, 200]
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)
    for entry in seen:
        assert entry["reason"] == "grant"
        assert sum(entry["postings"].values()) == 0  # type: ignore[attr-defined]
        assert entry["postings"]["available"] == entry["delta"]  # type: ignore[index]


def test_ledger_paging_parameters_out_of_range_are_422(client: TestClient) -> None:
    key = create_user(client, "bounds@example.com")
    for params in ({"limit": 0}, {"limit": 201}, {"before": 0}):
        response = client.get("/api/v1/credits/ledger", params=params, headers=bearer(key))
        assert response.status_code == 422, params
        assert response.json()["error"]["details"][0]["field"].startswith("query.")
