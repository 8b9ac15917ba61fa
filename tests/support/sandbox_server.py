"""A real sandbox server on a loopback port, with a webhook catcher beside it, so official SDKs
and our clients talk HTTP to it exactly as they would to the providers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from roleferry.sandbox.app import Sandbox, build_sandbox_app


@dataclass
class Caught:
    """Webhook deliveries the catcher received, and the statuses it should answer with."""

    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, provider: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.requests if p == provider]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.answers.clear()


@dataclass
class SandboxServer:
    url: str
    sandbox: Sandbox
    caught: Caught

    def base(self, provider: str) -> str:
        return f"{self.url}/sandbox/{provider}"

    def control(self, provider: str, **faults: Any) -> None:
        response = httpx.put(f"{self.url}/sandbox/_control/{provider}", json=faults)
        response.raise_for_status()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/sandbox/_control/stats").json()
        return result

    def wait_for(
        self, provider: str, count: int, timeout: float = 10
    ) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.caught.of(provider)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} {provider} deliveries, got {len(self.caught.of(provider))}"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _catcher_app(sandbox: Sandbox, caught: Caught) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await sandbox.start()
        yield
        await sandbox.stop()

    app = FastAPI(lifespan=lifespan)

    @app.post("/webhooks/{provider}")
    async def catch(provider: str, request: Request) -> Response:
        body = await request.body()
        with caught.lock:
            caught.requests.append((provider, dict(request.headers), body))
            status = caught.answers.pop(0) if caught.answers else 200
        return Response(status_code=status)

    app.mount("/sandbox", build_sandbox_app(sandbox))
    return app


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox = Sandbox(seed=7, target_url=url)
    caught = Caught()
    server = uvicorn.Server(
        uvicorn.Config(_catcher_app(sandbox, caught), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("sandbox server did not start")
        time.sleep(0.02)
    yield SandboxServer(url, sandbox, caught)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def sb(sandbox_server: SandboxServer) -> SandboxServer:
    """The sandbox server, reset: no faults, no counters, no provider data, no deliveries."""
    httpx.post(f"{sandbox_server.url}/sandbox/_control/reset").raise_for_status()
    sandbox_server.control("sendgrid", flush_interval_s=0.05, duplicate_rate=0.0, reorder_rate=0.0)
    sandbox_server.control("stripe", duplicate_rate=0.0)
    sandbox_server.caught.clear()
    return sandbox_server
