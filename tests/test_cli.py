"""The `roleferry` command as a user runs it, in real processes."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import free_port, wait_healthy

ROLEFERRY = [sys.executable, "-m", "roleferry"]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROLEFERRY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 60) -> str:
    """The first line of the process's stdout that starts with `prefix`, waiting for it as long
    as it takes on a busy machine rather than a fixed time."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"no line starting {prefix!r} within {timeout}s"
    return found[0]


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
    assert key not in out, "stdout is no terminal here: the key stays in its file"
    assert key[:10] in out
    assert str(tmp_path / "local-api-key") in out
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
    level = run(["migrate"], {**env, "ROLEFERRY_LOG_LEVEL": "TRACE"}, tmp_path)
    assert level.returncode == 2
    assert "ROLEFERRY_LOG_LEVEL: unknown log level 'TRACE'" in level.stderr
    assert "Traceback" not in level.stderr


def start_serve(
    env: dict[str, str], cwd: Path, stdout: int | IO[str]
) -> tuple[str, subprocess.Popen[str], Path]:
    """`roleferry serve` on a free port, its stderr in a file; returned once healthy."""
    port = free_port()
    errors = cwd / f"serve-{port}.err"
    with errors.open("w") as err_file:
        proc = subprocess.Popen(
            [*ROLEFERRY, "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=err_file,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, errors)
    except AssertionError:
        proc.kill()
        proc.wait(timeout=20)
        raise
    return url, proc, errors


def test_first_start_ends_with_a_short_banner_and_no_key_off_a_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Start-up prints a few lines in one format; the banner comes last, once the server
    answers, and off a terminal it names the key file and prefix, never the key."""
    secret = "hunter-secret-value-987654"
    out_path = tmp_path / "serve.out"
    with out_path.open("w") as out_file:
        url, proc, errors = start_serve(
            {**env, "ROLEFERRY_HUNTER_API_KEY": secret}, tmp_path, out_file
        )
    try:
        key = (tmp_path / "local-api-key").read_text().strip()
        assert httpx.get(f"{url}/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out, err = out_path.read_text(), errors.read_text()
    banner = [line for line in out.splitlines() if line.strip()]
    assert banner[0] == f"RoleFerry is ready at {url}"
    assert banner[-1].strip() == "Stop with Ctrl-C."
    assert len(banner) <= 8
    assert f"{url}/docs" in out
    assert "live: hunter" in out
    assert "sandbox: apollo, clay, sendgrid, anthropic, stripe" in out
    assert f"{key[:10]}…" in out
    assert str(tmp_path / "local-api-key") in out
    assert key not in out + err
    assert secret not in out + err
    not_requests = [line for line in err.splitlines() if "[roleferry.http]" not in line]
    assert len(not_requests) <= 3, not_requests
    console_record = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[\w+ *\] ")
    assert all(console_record.match(line) for line in err.splitlines()), err
    assert "migration" not in err, "library start-up chatter is DEBUG"
    assert not (tmp_path / "server-url").exists(), "a stopped server forgets its address"


def test_on_a_terminal_the_new_key_is_shown_once_and_debug_has_the_library_chatter(
    env: dict[str, str], tmp_path: Path
) -> None:
    """On a terminal the start that creates the key shows it; at DEBUG, DBOS's and alembic's
    records come through the same JSON formatter as ours."""
    controller, terminal = pty.openpty()
    debug_env = {**env, "ROLEFERRY_LOG_LEVEL": "DEBUG", "ROLEFERRY_LOG_FORMAT": "json"}
    try:
        _, proc, errors = start_serve(debug_env, tmp_path, terminal)
        try:
            shown = b""
            deadline = time.monotonic() + 30
            while b"Stop with Ctrl-C." not in shown and time.monotonic() < deadline:
                ready, _, _ = select.select([controller], [], [], 1)
                if ready:
                    shown += os.read(controller, 65536)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    finally:
        os.close(terminal)
        os.close(controller)
    key = (tmp_path / "local-api-key").read_text().strip()
    assert key in shown.decode()
    records = [json.loads(line) for line in errors.read_text().splitlines()]
    assert key not in errors.read_text()
    loggers = {r["logger"] for r in records if r["level"] == "debug"}
    assert "dbos" in {name.split(".")[0] for name in loggers}
    assert "alembic" in {name.split(".")[0] for name in loggers}
    assert any(r["event"] == "provider_configured" for r in records)


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


def test_search_finds_the_local_server_on_any_port_and_explains_failures(
    env: dict[str, str], tmp_path: Path
) -> None:
    """With no --server the CLI finds the server `serve` recorded; host:port needs no scheme;
    a refused key, another service, and every provider failing are each said as such."""
    url, proc, _ = start_serve(env, tmp_path, subprocess.DEVNULL)
    try:
        assert (tmp_path / "server-url").read_text().strip() == url
        world = httpx.get(f"{url}/sandbox/_world/companies", params={"limit": 1}).json()
        domain = world["companies"][0]["domain"]
        found = run(["search", domain, "--title", "VP", "--limit", "1"], env, tmp_path)
        assert found.returncode == 0, found.stderr
        assert f"{domain}: 1 person (via " in found.stdout

        nobody = run(
            ["search", domain, "--title", "Chief Vibes Officer", "--server", url[7:]], env, tmp_path
        )
        assert nobody.returncode == 0, nobody.stderr
        assert f"No one at {domain} with a title like Chief Vibes Officer." in nobody.stdout
        assert "┏" not in nobody.stdout, "no empty table"

        refused = run(["search", domain, "-t", "VP", "--api-key", "rf_not_a_key"], env, tmp_path)
        assert refused.returncode == 1
        assert f"{url} refused the API key from --api-key" in refused.stderr

        for provider in ("apollo", "clay", "hunter"):
            httpx.put(f"{url}/sandbox/_control/{provider}", json={"down": True})
        failed = run(["search", domain, "-t", "CTO"], env, tmp_path)
        assert failed.returncode == 1
        assert "every provider failed" in failed.stderr
        for provider in ("apollo", "clay", "hunter"):
            assert f"  {provider}: unavailable after " in failed.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        elsewhere = run(["search", domain, "-t", "VP"], {**env, "PORT": str(port)}, tmp_path)
    assert elsewhere.returncode == 1
    assert f"http://127.0.0.1:{port} (from HOST/PORT)" in elsewhere.stderr


def test_an_address_that_answers_but_is_not_roleferry_is_named(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Another web server on the address gets "not as roleferry does", not a JSON traceback."""
    (tmp_path / "local-api-key").write_text("rf_some_key\n")
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        result = run(
            ["search", "acme.com", "-t", "VP", "--server", f"127.0.0.1:{port}"], env, tmp_path
        )
    finally:
        other.terminate()
        other.wait(timeout=10)
    assert result.returncode == 1
    assert "but not as roleferry does" in result.stderr
    assert "Traceback" not in result.stderr


def test_top_level_help_lists_every_command_with_a_line_each(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`roleferry --help` names each command and says in one line what it does."""
    result = run(["--help"], {**env, "COLUMNS": "200"}, tmp_path)
    assert result.returncode == 0
    listed = {
        line.split()[1]: line
        for line in result.stdout.splitlines()
        if line.startswith("│ ") and len(line.split()) > 2
    }
    for command in ("serve", "migrate", "worker", "users", "sandbox", "search", "enrich"):
        assert command in listed, result.stdout
        assert len(listed[command].split()) > 4, listed[command]
    assert len(result.stdout.splitlines()) < 25


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
