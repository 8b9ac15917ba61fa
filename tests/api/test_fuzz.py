"""Schemathesis over the whole OpenAPI document, every check on, against a live server."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from roleferry.app import create_app
from roleferry.runtime import Runtime
from tests.conftest import make_settings
from tests.support.live_server import LiveServer, live_server

# The document comes from an app that is built, never started: collection needs no server.
_DOC = create_app(Runtime(make_settings(Path(tempfile.gettempdir())))).openapi()
schema = schemathesis.openapi.from_dict(_DOC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("fuzz")) as live:
        yield live


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_route_answers_a_server_error_or_breaks_its_schema(
    case: schemathesis.Case, server: LiveServer
) -> None:
    """Generated valid and invalid requests get documented answers, never a 5xx."""
    case.call_and_validate(base_url=server.url, headers=server.auth)
