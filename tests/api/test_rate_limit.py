"""The per-user request rate limit: past it, 429 in the error shape with a true Retry-After;
other users are not affected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import bearer, create_user, make_settings, start_client


@pytest.mark.parametrize(("spec", "allowed", "retry_after"), [("3/60", 3, 60), ("2/5", 2, 5)])
def test_a_user_past_its_rate_limit_gets_429_with_retry_after(
    tmp_path: Path, spec: str, allowed: int, retry_after: int
) -> None:
    """`allowed` requests go; the next is 429 `rate_limited`, Retry-After the window's refill."""
    with start_client(make_settings(tmp_path, user_rate_limit=spec)) as client:
        busy = create_user(client, "busy@example.com")
        calm = create_user(client, "calm@example.com")
        for _ in range(allowed):
            assert client.get("/api/v1/notifications", headers=bearer(busy)).status_code == 200
        refused = client.get("/api/v1/notifications", headers=bearer(busy))
        assert refused.status_code == 429
        assert abs(int(refused.headers["retry-after"]) - retry_after) <= 1
        error = refused.json()["error"]
        assert error["code"] == "rate_limited"
        assert "try again in" in error["message"]
        assert error["details"]["limit"] == spec
        assert client.get("/api/v1/notifications", headers=bearer(calm)).status_code == 200


def test_a_bad_rate_limit_setting_is_refused(tmp_path: Path) -> None:
    """ROLEFERRY_USER_RATE_LIMIT must look like 20/1,600/60."""
    with pytest.raises(ValueError, match="rate limit must look like"):
        make_settings(tmp_path, user_rate_limit="lots")
