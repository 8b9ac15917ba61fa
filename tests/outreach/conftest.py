from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.outreach.lab import Lab, open_lab
from tests.support.sandbox_server import SandboxServer


@pytest.fixture(params=["sqlite", "postgresql"])
async def lab(
    request: pytest.FixtureRequest, sb: SandboxServer, tmp_path: Path
) -> AsyncIterator[Lab]:
    """The lab on SQLite and on PostgreSQL (row locks, READ COMMITTED)."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    async for opened in open_lab(sb, tmp_path, **overrides):
        yield opened
