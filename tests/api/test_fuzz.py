"""Schemathesis over the whole OpenAPI document, with every check, against a live server with
an authenticated user: no generated request, valid or not, gets a 5xx or an undocumented answer.

Bounded (20 examples per API operation, 6 per sandbox one) so that it runs in every test run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from roleferry.app import create_app
from roleferry.runtime import Runtime
from roleferry.sandbox.app import Sandbox, build_sandbox_app
from tests.conftest import make_settings
from tests.support.live_server import LiveServer, live_server

# The document comes from an app that is built, never started: collection needs no server.
_DOC = create_app(Runtime(make_settings(Path(tempfile.gettempdir())))).openapi()
schema = schemathesis.openapi.from_dict(_DOC)
sandbox_schema = schemathesis.openapi.from_dict(
    build_sandbox_app(Sandbox(7, "http://127.0.0.1")).openapi()
)

# Creating a job takes the good rows and reports the bad ones (a 202 with `rejected`), and a
# callback URL is accepted only when it resolves to a public address: whether a request is
# accepted depends on more than its schema, so the two acceptance checks do not apply there.
# Every other check, the 5xx one included, still runs on it.
# Likewise a sequence (its templates' variables, a window whose end follows its start, an IANA
# zone) and an enrolment (JSON contacts, a CSV, or an enrichment job of yours).
_PARTIAL = {
    ("POST", "/api/v1/enrichment-jobs"): [positive_data_acceptance, negative_data_rejection],
    # An IANA zone is any string to the schema; the zone database decides.
    ("POST", "/api/v1/senders"): [positive_data_acceptance],
    ("POST", "/api/v1/sequences"): [positive_data_acceptance, negative_data_rejection],
    ("POST", "/api/v1/sequences/{sequence_id}/enrollments"): [
        positive_data_acceptance,
        negative_data_rejection,
    ],
}


# Derandomized: CI explores the same cases each run, so a failure is reproducible, and no
# example database is written into the work tree.
_FUZZ = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Budgets large enough that the providers' own limits, not ours, are never the answer.
    with live_server(
        tmp_path_factory.mktemp("fuzz"),
        apollo_rate_limit="100000/3600",
        clay_rate_limit="100000/1",
        hunter_rate_limit="100000/1",
    ) as live:
        yield live


@schema.parametrize()
@settings(_FUZZ, max_examples=20)
def test_no_route_answers_a_server_error_or_breaks_its_schema(
    case: schemathesis.Case, server: LiveServer
) -> None:
    """Generated valid and invalid requests get documented answers, never a 5xx."""
    excluded = _PARTIAL.get((case.operation.method.upper(), case.operation.path), [])
    case.call_and_validate(base_url=server.url, headers=server.auth, excluded_checks=excluded)


@sandbox_schema.parametrize()
@settings(_FUZZ, max_examples=6)
def test_no_sandbox_route_answers_a_server_error(
    case: schemathesis.Case, server: LiveServer
) -> None:
    """The simulators and their control plane (mounted at /sandbox, outside the API's document)
    never fail on what they are sent. Faults a control case sets are reset after it, so no case
    sees a simulated 5xx. Only the 5xx check: the simulators answer in each provider's own
    shapes, which their document does not describe."""
    try:
        case.call_and_validate(base_url=f"{server.url}/sandbox", checks=[not_a_server_error])
    finally:
        if case.operation.path.startswith("/_control"):
            server.reset()
