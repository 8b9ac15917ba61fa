"""Where the sandbox lives: mounted in the main server without keys, alone with
`roleferry sandbox`, and absent once every provider is live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from roleferry.config import Provider
from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.conftest import free_port, make_settings, start_client, start_roleferry


def test_mounted_in_the_main_server_with_provider_error_shapes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sandbox_faults=["hunter:error_rate=1;error_status=503"])
    with start_client(settings) as client:
        assert client.get("/sandbox/_world").json()["companies"] == 2000
        match = client.post(
            "/sandbox/apollo/api/v1/people/match",
            json={"id": "x"},
            headers={"x-api-key": SANDBOX_API_KEYS["apollo"]},
        )
        assert match.status_code == 200
        assert match.json() == {"person": None}
        hunter = client.get("/sandbox/hunter/v2/domain-search", params={"domain": "a.io"})
        assert hunter.status_code == 503
        assert "errors" in hunter.json()
        assert client.get("/sandbox/_control/stats").json()["providers"]["hunter"]


def test_not_mounted_when_every_provider_is_live(tmp_path: Path) -> None:
    keys = {f"{p.value}_api_key": f"live-key-{p.value}-123456" for p in Provider}
    with start_client(make_settings(tmp_path, **keys)) as client:
        assert client.get("/sandbox/_world").status_code == 404
        assert client.app.state.sandbox is None  # type: ignore[attr-defined]


def test_roleferry_sandbox_serves_alone_with_startup_faults(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    proc = start_roleferry(
        ["sandbox", "--fault", "apollo:error_rate=1;error_status=502"], env, tmp_path, port
    )
    url = f"http://127.0.0.1:{port}"
    try:
        failed = httpx.post(
            f"{url}/sandbox/apollo/api/v1/people/match",
            json={},
            headers={"x-api-key": SANDBOX_API_KEYS["apollo"]},
        )
        assert failed.status_code == 502
        assert httpx.get(f"{url}/sandbox/_world").json()["people"] >= 50_000
    finally:
        proc.terminate()
        proc.wait(20)
    bad = subprocess.run(
        [sys.executable, "-m", "roleferry", "sandbox", "--fault", "nobody:x=1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "bad --fault" in bad.stderr


def test_a_bad_startup_fault_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """The sandbox validates its own setting (the core's Settings know nothing of faults)."""
    settings = make_settings(tmp_path, sandbox_faults=["hunter:error_rate=lots"])
    with (
        pytest.raises(ValueError, match=r"(?s)ROLEFERRY_SANDBOX_FAULTS: .*error_rate"),
        start_client(settings),
    ):
        pass


def test_the_core_settings_import_no_sandbox_module() -> None:
    """The sandbox depends on the core, never the reverse: loading the settings (and the
    test credentials they check) pulls in nothing from roleferry.sandbox."""
    probe = (
        "import sys, roleferry.config; "
        "print(any(m.startswith('roleferry.sandbox') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
