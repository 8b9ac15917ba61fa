"""Shared fixtures: real settings, real databases, a real app per test.

Tests that need PostgreSQL or Redis carry a marker; they skip when the service is missing,
unless ROLEFERRY_REQUIRE_SERVICES=1 (CI), where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from roleferry.app import create_app
from roleferry.config import Settings
from roleferry.logging import configure_logging
from roleferry.resilience.testing import set_testing
from roleferry.runtime import Runtime

REQUIRE_SERVICES = os.environ.get("ROLEFERRY_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get(
    "ROLEFERRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ROLEFERRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or default_port), 1):
            return True
    except OSError:
        return False


def _service_missing(name: str) -> None:
    message = f"{name} is not reachable"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and ROLEFERRY_REQUIRE_SERVICES=1")
    pytest.skip(message)


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Structured logs to stderr at WARNING, redacted, as in production; tests that read logs
    configure their own capture."""
    configure_logging("WARNING", "console")


@pytest.fixture(autouse=True)
def _resilience_test_mode_off() -> Iterator[None]:
    """Every test starts and ends with the resilience test switch off, whatever it set."""
    set_testing(False)
    yield
    set_testing(False)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/roleferry.sqlite",
        "data_dir": tmp_path,
        "log_format": "console",
        "dbos_poll_s": 0.05,
        # Credits are tested in tests/payments; elsewhere nothing costs, so no suite runs out.
        "billing": "off",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards (with its DBOS twin)."""
    if not _reachable(POSTGRES_URL, 5432):
        _service_missing("PostgreSQL")
    name = f"rf_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(POSTGRES_URL)
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for db in (name, f"{name}_dbos"):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    if not _reachable(REDIS_URL, 6379):
        _service_missing("Redis")
    return REDIS_URL


def start_client(settings: Settings) -> TestClient:
    runtime = Runtime(settings, "http://testserver")
    runtime.migrate()
    return TestClient(create_app(runtime))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with start_client(settings) as test_client:
        yield test_client


def create_user(client: TestClient, email: str, *, is_admin: bool = False) -> str:
    """Creates a user straight in the database and returns its API key."""
    from roleferry.users import service

    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def create() -> str:
        async with runtime.db.session() as session:
            created = await service.create_user(session, email, is_admin=is_admin)
            return created.key.raw

    return client.portal.call(create)  # type: ignore[union-attr]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # HOST and PORT are what `serve` listens on and where the CLI looks: tests choose them.
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ROLEFERRY_") and k not in ("HOST", "PORT")
    }
    return {
        **clean,
        "ROLEFERRY_DATABASE_URL": f"sqlite:///{tmp_path}/rf.sqlite",
        "ROLEFERRY_DATA_DIR": str(tmp_path),
        "ROLEFERRY_BILLING": "off",  # as make_settings: tests of credits turn it on
    }


def wait_healthy(url: str, proc: subprocess.Popen[str], output: Path | None = None) -> None:
    """Start-up takes 2-5 s alone; a loaded 2-core machine has taken over 30."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = output.read_text() if output else proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"server exited early: {said}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


pytest_plugins = ["tests.support.sandbox_server", "tests.support.http_catcher"]


def start_roleferry(
    command: list[str], env: dict[str, str], cwd: Path, port: int
) -> subprocess.Popen[str]:
    """`roleferry <command> --port <port>` in its own process, returned once healthy. Its
    output goes to `roleferry-<port>.log` in `cwd`: a pipe nobody reads fills up and stalls a
    server that logs every request."""
    output = cwd / f"roleferry-{port}.log"
    with output.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roleferry", *command, "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    wait_healthy(f"http://127.0.0.1:{port}", proc, output)
    return proc
