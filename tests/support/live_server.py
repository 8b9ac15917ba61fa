"""The whole app on a real loopback port, its own sandbox mounted: our clients then call the
simulators over HTTP exactly as they call real providers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from roleferry.app import create_app
from roleferry.db import Database
from roleferry.resilience.store import MemoryStore
from roleferry.runtime import Runtime
from roleferry.users import service
from tests.conftest import free_port, make_settings


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    key: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def control(self, provider: str, **faults: Any) -> None:
        httpx.put(f"{self.url}/sandbox/_control/{provider}", json=faults).raise_for_status()

    def reset(self) -> None:
        """Sandbox faults, counters and data cleared; our breakers and budgets too."""
        httpx.post(f"{self.url}/sandbox/_control/reset").raise_for_status()
        providers = self.runtime.providers
        assert providers is not None
        if isinstance(providers.store, MemoryStore):
            asyncio.run(providers.store.clear())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/sandbox/_control/stats").json()["providers"]
        return result

    def calls(self, provider: str) -> int:
        return sum(sum(by_status.values()) for by_status in self.stats()[provider].values())

    def new_user(self, email: str) -> str:
        async def create() -> str:
            database = Database(self.runtime.settings.database_url)
            try:
                async with database.session() as session:
                    return (await service.create_user(session, email)).key.raw
            finally:
                await database.dispose()

        return asyncio.run(create())


@contextmanager
def live_server(tmp_path: Path, **overrides: Any) -> Iterator[LiveServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(tmp_path, public_url=url, **overrides)
    runtime = Runtime(settings, url)
    runtime.migrate()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("live server did not start")
        time.sleep(0.02)
    live = LiveServer(url, runtime)
    live.key = live.new_user("owner@example.com")
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(15)
