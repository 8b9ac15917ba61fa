"""Bulk enrichment of 1,000 contacts from the sandbox world, with provider limits scaled down
(default 100 calls per 10 s for Apollo, Clay and Hunter, in the simulators and in our budget).

Printed: completion time against the lower bound the limits imply (the busiest provider's
minimum calls, in windows of the bulk share of its limit) and their ratio; 429s received; coverage
(found / findable by any provider); wrong emails; provider calls per found email against
the minimum the waterfall needs.

    .venv/bin/python bench/bulk_enrichment.py [--contacts 1000] [--limit 100] [--period 10]
        [--apollo-spent]

`--apollo-spent`: the scenario "Apollo's budget spent at the start". Our Apollo budget is one
call per hour, and a single look-up spends it before the job starts: the job must go to Clay
and Hunter at once, and the lower bound is what their limits imply (Clay asked for everyone,
Hunter for everyone Clay has no email for); coverage is of what those two can find.
"""

from __future__ import annotations

import argparse
import math
import time

import httpx

from _serve import roleferry_server
from roleferry.sandbox.world import World

BULK_SHARE = 0.8
ENDPOINTS = {
    "apollo": "/api/v1/people/bulk_match",
    "clay": "/search/filters-mode",
    "hunter": "/v2/email-finder",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--apollo-spent", action="store_true")
    args = parser.parse_args()

    world = World(7)
    people = [p for c in world.companies[1000:] for p in c.people][: args.contacts]
    apollo = [p for p in people if world.apollo_has_email(p)]
    clay = [p for p in people if not world.apollo_has_email(p) and world.clay_has_email(p)]
    rest = [p for p in people if not world.apollo_has_email(p) and not world.clay_has_email(p)]
    hunter_right = [
        p
        for p in rest
        if (
            v := world.hunter_view(world.by_domain[p.company_domain], p.first_name, p.last_name)
        ).correct
        and v.confidence >= 70
    ]
    findable = len(apollo) + len(clay) + len(hunter_right)
    minimum = {
        "apollo": math.ceil(len(people) / 10),
        "clay": len(people) - len(apollo),
        "hunter": len(rest),
    }
    if args.apollo_spent:
        no_clay = [p for p in people if not world.clay_has_email(p)]
        hunter_only = [
            p
            for p in no_clay
            if (
                v := world.hunter_view(world.by_domain[p.company_domain], p.first_name, p.last_name)
            ).correct
            and v.confidence >= 70
        ]
        findable = sum(1 for p in people if world.clay_has_email(p)) + len(hunter_only)
        minimum = {"apollo": 0, "clay": len(people), "hunter": len(no_clay)}
    per_window = math.floor(BULK_SHARE * args.limit)
    # A sliding window lets `per_window` calls go at once, then as many each `period`:
    # N calls need (ceil(N / per_window) - 1) periods at the least.
    lower_bound = max((math.ceil(n / per_window) - 1) * args.period for n in minimum.values())

    spec = f"{args.limit}/{args.period:g}"
    settings = {
        "ROLEFERRY_APOLLO_RATE_LIMIT": "1/3600" if args.apollo_spent else spec,
        "ROLEFERRY_USER_BUDGET_SHARE": "1",
        "ROLEFERRY_USER_RATE_LIMIT": "1000/1",
        "ROLEFERRY_CLAY_RATE_LIMIT": spec,
        "ROLEFERRY_HUNTER_RATE_LIMIT": spec,
        "ROLEFERRY_SANDBOX_FAULTS": ",".join(
            f"{p}:rate_limit={spec}" for p in ("apollo", "clay", "hunter")
        ),
    }
    with roleferry_server(settings) as (url, key, _):
        auth = {"Authorization": f"Bearer {key}"}
        contacts = [
            {"first_name": p.first_name, "last_name": p.last_name, "domain": p.company_domain}
            for p in people
        ]
        if args.apollo_spent:
            spender = world.companies[0].people[0]
            httpx.post(
                f"{url}/api/v1/contacts/enrich",
                json={
                    "first_name": spender.first_name,
                    "last_name": spender.last_name,
                    "domain": spender.company_domain,
                },
                headers=auth,
                timeout=30,
            ).raise_for_status()
        before = httpx.get(f"{url}/sandbox/_control/stats").json()["providers"]
        started = time.monotonic()
        job_id = httpx.post(
            f"{url}/api/v1/enrichment-jobs", json={"contacts": contacts}, headers=auth, timeout=60
        ).json()["id"]
        while True:
            job = httpx.get(f"{url}/api/v1/enrichment-jobs/{job_id}", headers=auth).json()
            if job["status"] in ("succeeded", "partially_succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        rows = httpx.get(
            f"{url}/api/v1/enrichment-jobs/{job_id}/results", headers=auth, timeout=60
        ).json()["results"]
        stats = httpx.get(f"{url}/sandbox/_control/stats").json()["providers"]

    truth = {(p.first_name, p.last_name, p.company_domain): p.email for p in people}
    found = [r for r in rows if r["status"] == "found"]
    wrong = [
        r for r in found if r["email"] != truth[(r["first_name"], r["last_name"], r["domain"])]
    ]
    calls = {
        p: sum(stats[p].get(e, {}).values()) - sum(before[p].get(e, {}).values())
        for p, e in ENDPOINTS.items()
    }
    too_many = sum(
        v.get("429", 0) + (v.get("403", 0) if p == "hunter" else 0)
        for p in stats
        for v in stats[p].values()
    )
    scenario = "Apollo's budget spent at the start" if args.apollo_spent else "all providers"
    print(
        f"{scenario}: contacts={len(people)} limits={spec} per provider, "
        f"bulk share {BULK_SHARE:.0%}"
    )
    print(
        f"job {job['status']}: found {job['found']}, not found {job['not_found']}, "
        f"failed {job['failed']}"
    )
    ratio = elapsed / lower_bound if lower_bound else float("nan")
    print(
        f"completion: {elapsed:.1f} s; lower bound {lower_bound:.1f} s "
        f"(busiest provider's minimum calls, {per_window} per {args.period:g} s); "
        f"ratio {ratio:.2f} "
        "(target <= 1.15)"
    )
    print(f"rate-limit refusals received (429, Hunter 403): {too_many} (target 0)")
    print(
        f"coverage: {len(found)} found / {findable} findable = {len(found) / findable:.1%} "
        "(target 100%)"
    )
    print(f"wrong emails returned: {len(wrong)}")
    total_calls, min_calls = sum(calls.values()), sum(minimum.values())
    print(f"provider calls: {calls} = {total_calls}; minimum {minimum} = {min_calls}")
    print(
        f"calls per found email: {total_calls / max(1, len(found)):.2f}; "
        f"minimum {min_calls / max(1, findable):.2f}; ratio {total_calls / max(1, min_calls):.2f}"
    )


if __name__ == "__main__":
    main()
