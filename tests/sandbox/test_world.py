"""The synthetic world: deterministic, big enough for benchmarks, quick to start, and each
provider knowing a different part of it."""

from __future__ import annotations

import time

import httpx

from roleferry.sandbox.world import World
from tests.support.sandbox_server import SandboxServer


def test_same_seed_same_world_other_seed_other_world() -> None:
    a, b, c = World(7), World(7), World(8)
    assert [x.domain for x in a.companies[:50]] == [x.domain for x in b.companies[:50]]
    assert a.companies[3].people == b.companies[3].people
    assert [x.domain for x in a.companies[:50]] != [x.domain for x in c.companies[:50]]


def test_world_is_large_and_starts_fast() -> None:
    """Building the world costs under 2 s of this process's CPU, however busy the machine."""
    started = time.process_time()
    world = World(7)
    assert time.process_time() - started < 2
    assert len(world.companies) >= 2000
    assert world.total_people >= 50_000
    assert len(world.by_domain) == len(world.companies)


def test_emails_follow_the_company_pattern_and_are_unique() -> None:
    world = World(7)
    for company in world.companies[:100]:
        emails = [p.email for p in company.people]
        assert len(set(emails)) == len(emails) == company.size
        assert all(e.endswith("@" + company.domain) for e in emails)


def test_providers_know_different_overlapping_parts() -> None:
    world = World(7)
    people = [p for c in world.companies[:400] for p in c.people]
    apollo = {p.id for p in people if world.apollo_has_email(p)}
    clay = {p.id for p in people if world.clay_has_email(p)}
    hunter_right = {
        p.id
        for p in people
        if world.hunter_view(world.by_domain[p.company_domain], p.first_name, p.last_name).correct
    }
    assert 0.4 < len(apollo) / len(people) < 0.6
    assert apollo & clay
    assert clay - apollo
    assert apollo - clay
    assert hunter_right - apollo - clay
    assert len(hunter_right) < len(people)
    companies = world.companies[:400]
    lacking = [c for c in companies if not world.apollo_knows_company(c)]
    assert sum(world.clay_knows_company(c) for c in lacking) / len(lacking) > 0.6
    assert 0.01 < sum(p.bounces for p in people) / len(people) < 0.06


def test_truth_endpoints_describe_people_and_who_knows_them(sb: SandboxServer) -> None:
    listing = httpx.get(f"{sb.url}/sandbox/_world/companies", params={"limit": 3}).json()
    assert listing["total"] == 2000
    assert len(listing["companies"]) == 3
    domain = listing["companies"][0]["domain"]
    detail = httpx.get(f"{sb.url}/sandbox/_world/companies/{domain}").json()
    person = detail["people"][0]
    assert person["email"].endswith("@" + domain)
    assert set(person["known_by"]) == {"apollo", "clay", "hunter"}
    assert httpx.get(f"{sb.url}/sandbox/_world/companies/nowhere.example").status_code == 404
    assert httpx.get(f"{sb.url}/sandbox/_world").json()["people"] >= 50_000
