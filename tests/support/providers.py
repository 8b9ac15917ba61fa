"""Real provider clients and policies, pointed at a sandbox server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers.registry import Providers
from tests.conftest import make_settings
from tests.support.sandbox_server import SandboxServer


def providers_for(sb: SandboxServer, tmp_path: Path, **overrides: Any) -> Providers:
    return Providers(make_settings(tmp_path, **overrides), sb.url, IntegrationStats())
