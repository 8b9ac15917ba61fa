"""Who reaches the sandbox's control plane, which simulators it may switch, and where the
simulators may deliver webhooks: local callers or the sandbox admin key; live providers locked;
this server's own receivers, or configured targets through the outbound address guard."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from roleferry.app import create_app
from roleferry.config import Settings
from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.runtime import Runtime
from roleferry.sandbox.world import World
from tests.conftest import make_settings, start_client
from tests.support.http_catcher import Catcher
from tests.support.live_server import live_server
from tests.support.waiting import wait_for

SENDGRID_AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEYS['sendgrid']}"}


def exposed_client(settings: Settings, client: tuple[str, int]) -> TestClient:
    """The app as `roleferry serve --host 0.0.0.0` builds it, called from `client`."""
    runtime = Runtime(settings, "http://testserver", listen_host="0.0.0.0")  # noqa: S104
    runtime.migrate()
    return TestClient(create_app(runtime), client=client)


def test_listening_everywhere_the_control_plane_is_closed_to_remote_callers(
    tmp_path: Path,
) -> None:
    """Bound to 0.0.0.0 with no admin key: a remote caller gets 403 saying what to set; the
    simulators still answer; a caller on this machine still controls it."""
    settings = make_settings(tmp_path)
    with exposed_client(settings, ("203.0.113.9", 40000)) as remote:
        for method, path in (
            ("PUT", "/sandbox/_control/apollo"),
            ("POST", "/sandbox/_control/reset"),
            ("GET", "/sandbox/_control"),
            ("GET", "/sandbox/_control/stats"),
        ):
            refused = remote.request(method, path, json={"down": True})
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "forbidden"
            assert "ROLEFERRY_SANDBOX_ADMIN_KEY" in refused.json()["error"]["message"]
        assert remote.get("/sandbox/_world").status_code == 200
        sandbox = remote.app.state.sandbox  # type: ignore[attr-defined]
        assert sandbox.control["apollo"].faults.down is False
    with exposed_client(settings, ("127.0.0.1", 40000)) as local:
        assert local.put("/sandbox/_control/apollo", json={"down": True}).status_code == 200


def test_with_an_admin_key_remote_callers_need_it(tmp_path: Path) -> None:
    """ROLEFERRY_SANDBOX_ADMIN_KEY set: no or a wrong bearer is 401, the right one works."""
    settings = make_settings(tmp_path, sandbox_admin_key="sandbox-admin-0123456789")
    with exposed_client(settings, ("198.51.100.4", 40000)) as remote:
        assert remote.put("/sandbox/_control/clay", json={"down": True}).status_code == 401
        wrong = {"Authorization": "Bearer sandbox-admin-wrong"}
        assert remote.put("/sandbox/_control/clay", json={}, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer sandbox-admin-0123456789"}
        changed = remote.put("/sandbox/_control/clay", json={"down": True}, headers=right)
        assert changed.status_code == 200
        assert changed.json()["down"] is True


def test_on_loopback_a_proxied_request_is_not_local(tmp_path: Path) -> None:
    """Bound to loopback behind a reverse proxy: a forwarded request needs the key."""
    with start_client(make_settings(tmp_path)) as client:
        assert client.get("/sandbox/_control").status_code == 200
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            proxied = client.get("/sandbox/_control", headers={header: "203.0.113.7"})
            assert proxied.status_code == 403, header


def test_live_providers_simulators_are_locked(tmp_path: Path) -> None:
    """With Apollo live, its simulator's controls are refused (409); Clay's still work."""
    with start_client(make_settings(tmp_path, apollo_api_key="live-apollo-0123456")) as client:
        locked = client.put("/sandbox/_control/apollo", json={"down": True})
        assert locked.status_code == 409
        assert "ROLEFERRY_APOLLO_API_KEY" in locked.json()["error"]["message"]
        assert client.put("/sandbox/_control/clay", json={"down": True}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/webhooks/stripe",
        "http://testserver/sandbox/_control/reset",
        "https://attacker.example/collect",
    ],
)
def test_webhook_targets_are_this_servers_receivers_only(tmp_path: Path, url: str) -> None:
    """The control plane and SendGrid's settings API refuse any other delivery target."""
    with start_client(make_settings(tmp_path)) as client:
        refused = client.put("/sandbox/_control/stripe", json={"webhook_url": url})
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["field"] == "webhook_url"
        patched = client.patch(
            "/sandbox/sendgrid/v3/user/webhooks/event/settings",
            json={"url": url},
            headers=SENDGRID_AUTH,
        )
        assert patched.status_code == 400
        own = client.put(
            "/sandbox/_control/stripe", json={"webhook_url": "http://testserver/webhooks/stripe"}
        )
        assert own.status_code == 200


def test_configured_targets_go_through_the_address_guard(tmp_path: Path, catcher: int) -> None:
    """A target under ROLEFERRY_SANDBOX_WEBHOOK_TARGETS is delivered to at the checked address;
    once its name resolves to a private address, deliveries are refused, not retried."""
    target = f"http://hooks.example:{catcher}/"
    answers = {"hooks.example": ["127.0.0.1"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    person = next(p for p in World(7).companies[0].people if not p.bounces)
    with live_server(tmp_path, sandbox_webhook_targets=[target]) as live:
        live.runtime.resolver = resolver
        live.control("sendgrid", webhook_url=f"{target}events", flush_interval_s=0.05)

        def send() -> None:
            sent = httpx.post(
                f"{live.url}/sandbox/sendgrid/v3/mail/send",
                headers=SENDGRID_AUTH,
                json={
                    "personalizations": [{"to": [{"email": person.email}]}],
                    "from": {"email": "jobs@roleferry.test"},
                    "subject": "Hello",
                    "content": [{"type": "text/plain", "value": "Hi"}],
                },
            )
            assert sent.status_code == 202

        send()
        wait_for(lambda: len(Catcher.received) >= 1)
        assert Catcher.received[0]["host"] == f"hooks.example:{catcher}"

        def stats() -> dict[str, int]:
            webhooks = httpx.get(f"{live.url}/sandbox/_control/stats").json()["webhooks"]
            result: dict[str, int] = webhooks["sendgrid"]
            return result

        wait_for(lambda: stats()["pending"] == 0)
        before = len(Catcher.received)
        answers["hooks.example"] = ["10.0.0.1"]
        send()
        wait_for(lambda: stats()["refused"] >= 1)
        wait_for(lambda: stats()["pending"] == 0)
        assert len(Catcher.received) == before


def test_listening_everywhere_is_said_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--host 0.0.0.0` with the sandbox mounted logs a warning naming the exposure."""
    from roleferry.logging import configure_logging

    configure_logging("INFO", "console")
    try:
        with exposed_client(make_settings(tmp_path), ("127.0.0.1", 1)):
            pass
    finally:
        configure_logging("WARNING", "console")
    said = capsys.readouterr().err
    assert "sandbox_exposed" in said
    assert "0.0.0.0" in said  # noqa: S104
