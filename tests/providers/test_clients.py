"""Each client maps its provider's failures, quirks included, into the typed error tree at its
boundary, with no key in any message; and converts payloads into one Contact shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roleferry.providers import errors
from roleferry.providers.models import PersonQuery, real_email
from roleferry.providers.registry import Providers
from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.ratelimit import Priority
from roleferry.resilience.testing import set_testing
from tests.support.providers import providers_for
from tests.support.sandbox_server import SandboxServer

ONE_ATTEMPT = {"attempt_timeout_s": 0.5}


@pytest.fixture
async def providers(sb: SandboxServer, tmp_path: Path) -> AsyncIterator[Providers]:
    set_testing(True, attempts=1)
    built = providers_for(sb, tmp_path, **ONE_ATTEMPT)
    yield built
    await built.aclose()


def a_company_with_emails(sb: SandboxServer) -> tuple[str, list[Any]]:
    world = sb.sandbox.world
    company = next(
        c for c in world.companies if world.apollo_knows_company(c) and world.clay_knows_company(c)
    )
    return company.domain, company.people


async def search(providers: Providers, name: str, domain: str = "domaur.com") -> Any:
    return await providers.people_finders[name].search_people(
        domain, ["engineer"], 5, deadline=Deadline(3), priority=Priority.INTERACTIVE
    )


@pytest.mark.parametrize("name", ["apollo", "clay", "hunter"])
async def test_search_converts_to_contacts(
    providers: Providers, sb: SandboxServer, name: str
) -> None:
    domain, people = a_company_with_emails(sb)
    found = await providers.people_finders[name].search_people(
        domain, ["a"], 50, deadline=Deadline(3), priority=Priority.INTERACTIVE
    )
    truth = {p.email for p in people}
    assert found, name
    for contact in found:
        assert contact.company_domain == domain
        assert contact.sources.get("first_name") == name
        if contact.email and contact.email_status == "verified":
            assert contact.email in truth


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        ({"error_rate": 1.0, "error_status": 500}, errors.Unavailable),
        ({"error_rate": 1.0, "error_status": 503}, errors.Unavailable),
        ({"malformed": 1.0}, errors.BadResponse),
        ({"hang": True}, errors.Timeout),
        ({"down": True}, errors.Unavailable),
    ],
)
@pytest.mark.parametrize("name", ["apollo", "clay", "hunter"])
async def test_faults_map_to_typed_errors(
    providers: Providers,
    sb: SandboxServer,
    name: str,
    faults: dict[str, Any],
    error: type[Exception],
) -> None:
    sb.control(name, **faults)
    with pytest.raises(error) as raised:
        await search(providers, name)
    assert SANDBOX_API_KEYS[name] not in str(raised.value)
    assert raised.value.provider == name  # type: ignore[attr-defined]


async def test_apollo_429_is_rate_limited_with_retry_after(
    providers: Providers, sb: SandboxServer
) -> None:
    sb.control("apollo", rate_limit={"limit": 2, "period_s": 1800})
    await search(providers, "apollo")
    with pytest.raises(errors.RateLimited) as raised:
        await search(providers, "apollo")
    assert raised.value.retry_after is not None
    assert 0 < raised.value.retry_after <= 1800


async def test_hunter_403_is_a_rate_limit_and_429_an_exhausted_quota(
    providers: Providers, sb: SandboxServer
) -> None:
    sb.control("hunter", rate_limit={"limit": 1, "period_s": 3600})
    await search(providers, "hunter")
    with pytest.raises(errors.RateLimited) as limited:
        await search(providers, "hunter")
    assert limited.value.status == 403
    await providers.store.clear()
    sb.control("hunter", rate_limit=None, quota=0)
    with pytest.raises(errors.QuotaExhausted):
        await search(providers, "hunter")


@pytest.mark.parametrize("name", ["apollo", "clay", "hunter"])
async def test_a_wrong_key_is_auth_failed_and_never_echoed(
    sb: SandboxServer, tmp_path: Path, name: str
) -> None:
    wrong = "wrong-key-that-must-not-leak-123"
    built = providers_for(
        sb, tmp_path, **{f"{name}_api_key": wrong, f"{name}_base_url": sb.base(name)}
    )
    try:
        with pytest.raises(errors.AuthFailed) as raised:
            await search(built, name)
        assert wrong not in str(raised.value)
        assert wrong not in repr(raised.value)
    finally:
        await built.aclose()


async def test_find_emails_batches_apollo_by_ten(providers: Providers, sb: SandboxServer) -> None:
    world = sb.sandbox.world
    people = [p for c in world.companies[:40] for p in c.people if world.apollo_has_email(p)][:23]
    queries = [
        PersonQuery(first_name=p.first_name, last_name=p.last_name, domain=p.company_domain)
        for p in people
    ]
    found = await providers.email_finders["apollo"].find_emails(
        queries, deadline=Deadline(5), priority=Priority.BULK
    )
    assert [c.email if c else None for c in found] == [p.email for p in people]
    assert sb.stats()["providers"]["apollo"]["/api/v1/people/bulk_match"] == {"200": 3}


def test_placeholders_are_not_addresses() -> None:
    assert real_email("email_not_unlocked@acme.com") is None
    assert real_email("  Dana@Acme.io ") == "dana@acme.io"
    assert real_email("") is None
    assert real_email(None) is None
    assert real_email("nope") is None


async def test_apollos_own_count_keeps_us_under_its_limit(
    providers: Providers, sb: SandboxServer
) -> None:
    """Apollo says its hourly limit is 2: our budget adopts it, so the third call is never sent."""
    sb.control("apollo", rate_limit={"limit": 2, "period_s": 3600})
    await search(providers, "apollo")
    with pytest.raises(errors.BudgetExhausted):
        await search(providers, "apollo")
    assert "429" not in {s for by in sb.stats()["providers"]["apollo"].values() for s in by}
