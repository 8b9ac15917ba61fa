"""The `roleferry` command as a user runs it, in real processes."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_healthy

ROLEFERRY = [sys.executable, "-m", "roleferry"]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROLEFERRY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [*ROLEFERRY, "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_users_create_prints_the_key_alone_on_the_last_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = run(["users", "create", "Dana@Example.com", "--admin"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("rf_")
    assert " " not in key
    with sqlite3.connect(tmp_path / "rf.sqlite") as db:
        row = db.execute(
            "SELECT u.email, u.is_admin FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.key_hash = ?",
            (hashlib.sha256(key.encode()).hexdigest(),),
        ).fetchone()
    assert row == ("dana@example.com", 1)
    again = run(["users", "create", "dana@example.com"], env, tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_first_serve_creates_a_local_user_and_a_second_process_is_refused(
    server: tuple[str, subprocess.Popen[str]], env: dict[str, str], tmp_path: Path
) -> None:
    url, proc = server
    key = (tmp_path / "local-api-key").read_text().strip()
    me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert me.json()["is_admin"] is True
    assert httpx.get(f"{url}/readyz").json()["dbos"] == "launched"

    second = run(["serve", "--port", str(free_port())], env, tmp_path)
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert "PostgreSQL" in second.stderr
    assert "Traceback" not in second.stderr
    assert httpx.get(f"{url}/healthz").status_code == 200

    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert key in out
    assert f"{url}/" in out


def test_serve_on_a_busy_port_fails_clearly(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["serve", "--port", str(port)], env, tmp_path)
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_sqlite(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["worker"], env, tmp_path)
    assert result.returncode == 1
    assert "needs PostgreSQL" in result.stderr


def test_bad_configuration_is_named(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["migrate"], {**env, "ROLEFERRY_DATABASE_URL": "mysql://x/y"}, tmp_path)
    assert result.returncode == 2
    assert "ROLEFERRY_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_startup_log_says_live_or_sandbox_per_provider_without_keys(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    secret = "hunter-secret-value-987654"
    proc = subprocess.Popen(
        [*ROLEFERRY, "serve", "--port", str(port)],
        env={**env, "ROLEFERRY_HUNTER_API_KEY": secret, "ROLEFERRY_LOG_FORMAT": "json"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    lines = [line for line in err.splitlines() if "provider_configured" in line]
    assert len(lines) == 6
    assert any('"provider": "hunter"' in line and '"mode": "live"' in line for line in lines)
    assert any('"provider": "apollo"' in line and '"mode": "sandbox"' in line for line in lines)
    assert secret not in err


def test_search_prints_a_table(
    server: tuple[str, subprocess.Popen[str]], env: dict[str, str], tmp_path: Path
) -> None:
    url, _ = server
    domain = httpx.get(f"{url}/sandbox/_world/companies", params={"limit": 1}).json()["companies"][
        0
    ]["domain"]
    result = run(
        ["search", domain, "--title", "VP", "--title", "Engineer", "--server", url], env, tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert domain in result.stdout
    assert "Email" in result.stdout
    assert "@" + domain in result.stdout
    bad = run(["search", "not a domain", "--title", "VP", "--server", url], env, tmp_path)
    assert bad.returncode == 1
    assert "bare domain" in bad.stderr


def test_search_refresh_bypasses_the_cache(
    server: tuple[str, subprocess.Popen[str]], env: dict[str, str], tmp_path: Path
) -> None:
    """The same search twice is answered from the cache; `--refresh` asks the providers."""
    url, _ = server
    domain = httpx.get(f"{url}/sandbox/_world/companies", params={"limit": 3}).json()["companies"][
        2
    ]["domain"]
    command = ["search", domain, "--title", "VP", "--server", url]
    assert run(command, env, tmp_path).returncode == 0
    again = run(command, env, tmp_path)
    assert again.stdout.strip().endswith("cached"), again.stdout
    fresh = run([*command, "--refresh"], env, tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert "cached" not in fresh.stdout
    assert "apollo ok" in fresh.stdout


def test_enrich_follows_a_job_and_resumes_it_after_ctrl_c(
    server: tuple[str, subprocess.Popen[str]], env: dict[str, str], tmp_path: Path
) -> None:
    import signal

    from roleferry.sandbox.world import World

    url, _ = server
    people = [p for c in World(7).companies[900:940] for p in c.people][:60]
    source = tmp_path / "contacts.csv"
    source.write_text(
        "first_name,last_name,domain\n"
        + "".join(f"{p.first_name},{p.last_name},{p.company_domain}\n" for p in people)
        + ",broken,\n"
    )
    httpx.put(f"{url}/sandbox/_control/clay", json={"latency_ms": 200}).raise_for_status()
    follower = subprocess.Popen(
        [*ROLEFERRY, "enrich", str(source), "--server", url],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 130, err
    assert "the job goes on" in out
    first_job = next(
        line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("job ")
    )
    assert "line 62: first_name is required" in err
    httpx.put(f"{url}/sandbox/_control/clay", json={"latency_ms": 0}).raise_for_status()
    result = run(
        ["enrich", str(source), "--server", url, "-o", str(tmp_path / "out.csv")], env, tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"job {first_job}:" in result.stdout, "the same file resumes the same job"
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 61
    assert rows[0].startswith("line,first_name")
    assert sum(1 for r in rows[1:] if "@" in r) > 30


@pytest.mark.postgres
def test_worker_runs_durable_work_on_postgres_and_stops_cleanly(
    env: dict[str, str], tmp_path: Path, postgres_url: str
) -> None:
    import signal

    proc = subprocess.Popen(
        [*ROLEFERRY, "worker"],
        env={**env, "ROLEFERRY_DATABASE_URL": postgres_url},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "worker started" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
