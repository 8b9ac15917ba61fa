from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.outreach.lab import Lab, open_lab
from tests.support.sandbox_server import SandboxServer


@pytest.fixture
async def lab(sb: SandboxServer, tmp_path: Path) -> AsyncIterator[Lab]:
    async for opened in open_lab(sb, tmp_path):
        yield opened
