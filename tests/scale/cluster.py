"""A scale-out deployment for tests: PostgreSQL, Redis, one standalone sandbox, and roleferry
processes (`serve` and `worker`) started, killed and restarted as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg


@dataclass
class Proc:
    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int | None = None
    popen: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.cwd / f"{self.name}.log"

    def start(self) -> Proc:
        args = [*self.command, *(["--port", str(self.port)] if self.port else [])]
        with self.log.open("a") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "roleferry", *args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        return self

    def wait_up(self, database_url: str) -> Proc:
        assert self.popen is not None
        if self.port:
            deadline = time.monotonic() + 90  # four processes start on two shared cores
            while not self._healthy():
                assert self.popen.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, f"{self.name} did not become healthy"
                time.sleep(0.2)
        else:  # a worker is up when its heartbeat is in the database
            deadline = time.monotonic() + 60
            while not any(f"-{self.popen.pid}-" in e for e in executors(database_url)):
                assert self.popen.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "worker did not start"
                time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def freeze(self) -> None:
        """Stops the process where it is (SIGSTOP): it does nothing until thawed or killed."""
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGCONT)

    def signal_stop(self) -> None:
        """SIGTERM, continuing a frozen process to receive it."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            self.thaw()

    def stop(self) -> None:
        self.signal_stop()
        self.wait_exit()

    def wait_exit(self) -> None:
        """Waits for the exit of a signalled process; SIGKILL after 30 s."""
        if self.popen is not None:
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def sql(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return list(conn.execute(query, params).fetchall())  # type: ignore[arg-type]


def executors(database_url: str) -> list[str]:
    try:
        return [r[0] for r in sql(database_url, "SELECT executor_id FROM executor_heartbeats")]
    except psycopg.errors.UndefinedTable:
        return []


@dataclass
class Cluster:
    database_url: str
    sandbox: Proc
    procs: dict[str, Proc] = field(default_factory=dict)

    def api(self, name: str) -> Proc:
        return self.procs[name]

    def pid_of(self, executor_id: str) -> Proc:
        return next(
            p
            for p in self.procs.values()
            if p.popen is not None and f"-{p.popen.pid}-" in executor_id
        )

    def control(self, provider: str, **faults: Any) -> None:
        httpx.put(f"{self.sandbox.url}/sandbox/_control/{provider}", json=faults).raise_for_status()

    def stats(self, provider: str) -> dict[str, dict[str, int]]:
        body = httpx.get(f"{self.sandbox.url}/sandbox/_control/stats").json()
        result: dict[str, dict[str, int]] = body["providers"][provider]
        return result

    def stop(self) -> None:
        """Signals every process first, then waits: they shut down side by side."""
        procs = [*self.procs.values(), self.sandbox]
        for proc in procs:
            proc.signal_stop()
        for proc in procs:
            proc.wait_exit()


def base_env(tmp_path: Path, database_url: str, redis_url: str, sandbox_url: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROLEFERRY_", "PROMETHEUS_")) and k not in ("HOST", "PORT")
    }
    return {
        **clean,
        "ROLEFERRY_DATABASE_URL": database_url,
        "ROLEFERRY_REDIS_URL": redis_url,
        "ROLEFERRY_DATA_DIR": str(tmp_path),
        "ROLEFERRY_DBOS_POLL_S": "0.1",
        "ROLEFERRY_HEARTBEAT_INTERVAL_S": "0.5",
        "ROLEFERRY_EXECUTOR_DEAD_AFTER_S": "5",  # a loaded 2-core machine starves processes
        "ROLEFERRY_LOG_LEVEL": "INFO",
        "ROLEFERRY_BILLING": "off",  # jobs of hundreds of contacts, past the starting credits
        # One user drives the cluster's load on purpose: no per-user rate or budget share.
        "ROLEFERRY_USER_RATE_LIMIT": "1000/1",
        "ROLEFERRY_USER_BUDGET_SHARE": "1",
        **{
            f"ROLEFERRY_{p.upper()}_BASE_URL": f"{sandbox_url}/sandbox/{p}"
            for p in ("apollo", "clay", "hunter", "sendgrid", "anthropic", "stripe")
        },
    }
