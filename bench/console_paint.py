"""First paint of each console page, on the embedded default (SQLite) with 10,000 enrichment jobs
(the newest of them with 10,000 rows) and 100,000 webhook events stored, and for the Drafts,
Sequences and Credits pages 10,000 drafts, a sequence with 10,000 enrolments and 10,000 ledger
entries, against a running `roleferry serve`, measured in Debian's chromium through Playwright.

Each page is loaded `--loads` times after one warm-up load; printed: the median and worst
`first-contentful-paint` per page (the browser's own figure, from navigation start, so it holds
the server's answer, the HTML parse and the render), against the 200 ms budget.

    .venv/bin/python bench/console_paint.py [--loads 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import sync_playwright
from sqlalchemy import create_engine, insert, select

from _serve import roleferry_server
from roleferry.drafting.models import Draft
from roleferry.enrichment.models import EnrichmentItem, EnrichmentJob
from roleferry.notifications.models import Notification
from roleferry.outreach.models import Enrollment, Sender, SequenceDef, SequenceSend, TimelineEntry
from roleferry.payments.models import CreditEntry, CreditPosting
from roleferry.users.models import User
from roleferry.webhooks.models import WebhookEvent

JOBS = 10_000
ROWS = 10_000
EVENTS = 100_000
FEATURE_ROWS = 10_000
BUDGET_MS = 200.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def seed(database: str) -> str:
    """Stores the jobs, one job's rows, the events and a few notifications; returns the
    newest job's id."""
    engine = create_engine(database)
    start = datetime.now(UTC) - timedelta(days=30)
    with engine.begin() as conn:
        user_id = conn.execute(select(User.id)).scalar_one()
        conn.execute(
            insert(EnrichmentJob),
            [
                {
                    "id": f"job_bench{i:06d}",
                    "user_id": user_id,
                    "status": "succeeded",
                    "total": 10,
                    "rejected": [],
                    "verify_patterns": False,
                    "created_at": start + timedelta(minutes=i),
                    "started_at": time.time(),
                    "finished_at": time.time(),
                }
                for i in range(JOBS)
            ],
        )
        newest = f"job_bench{JOBS - 1:06d}"
        conn.execute(
            insert(EnrichmentItem),
            [
                {
                    "job_id": newest,
                    "line": i + 2,
                    "first_name": f"First{i}",
                    "last_name": f"Last{i}",
                    "domain": "acme.com",
                    "status": "found",
                    "email": f"first{i}@acme.com",
                    "source": "apollo",
                    "confidence": 90,
                    "verification": "verified",
                }
                for i in range(ROWS)
            ],
        )
        for chunk in range(0, EVENTS, 10_000):
            conn.execute(
                insert(WebhookEvent),
                [
                    {
                        "provider": "sendgrid" if i % 3 else "stripe",
                        "event_id": f"evt_bench_{i}",
                        "type": ("delivered", "open", "bounce", "click")[i % 4],
                        "payload": {"email": f"p{i}@acme.com", "sg_message_id": f"m{i}.x"},
                        "occurred_at": time.time(),
                        "received_at": start + timedelta(seconds=i * 20),
                        "status": "failed" if i % 50 == 0 else "applied",
                        "outcome": "boom" if i % 50 == 0 else "delivered",
                    }
                    for i in range(chunk, min(EVENTS, chunk + 10_000))
                ],
            )
        conn.execute(
            insert(Notification),
            [
                {
                    "user_id": user_id,
                    "kind": "enrichment_job.finished",
                    "title": f"Enrichment job job_bench{i:06d} succeeded",
                    "data": {"id": f"job_bench{i:06d}"},
                    "created_at": start + timedelta(minutes=i),
                }
                for i in range(100)
            ],
        )
    engine.dispose()
    return newest


def seed_features(database: str) -> tuple[str, str, str]:
    """Stores drafts, a sender and a sequence with its enrolments (one with a timeline), and
    ledger entries for the user; returns a draft's, the sequence's and an enrolment's ids."""
    engine = create_engine(database)
    start = datetime.now(UTC) - timedelta(days=30)
    now = time.time()
    with engine.begin() as conn:
        user_id = conn.execute(select(User.id)).scalar_one()
        ask = {"recipient": {"name": "Jane Doe", "company": "Acme"}, "aim": {"role": "PM"}}
        conn.execute(
            insert(Draft),
            [
                {
                    "id": f"drf_bench{i:06d}",
                    "user_id": user_id,
                    "status": "complete",
                    "source": "model",
                    "model": "bench",
                    "request": ask,
                    "subject": f"Subject {i}",
                    "body": "Hello " * 80,
                    "created_at": start + timedelta(minutes=i),
                    "updated_at": start + timedelta(minutes=i),
                }
                for i in range(FEATURE_ROWS)
            ],
        )
        conn.execute(
            insert(Sender),
            [
                {
                    "id": "sdr_bench",
                    "user_id": user_id,
                    "email": "me@rf-send-01.com",
                    "daily_cap": 50,
                    "warmup_start": 10,
                    "warmup_step": 5,
                    "min_gap_s": 60.0,
                    "jitter_s": 30.0,
                    "started_at": now,
                }
            ],
        )
        step = {"delay_s": 0, "subject": "Hi {{first_name}}", "body": "Hello"}
        window = {"days": [0, 1, 2, 3, 4], "start_hour": 9, "end_hour": 17}
        conn.execute(
            insert(SequenceDef),
            [
                {
                    "id": "seq_bench",
                    "user_id": user_id,
                    "name": "bench",
                    "sender_id": "sdr_bench",
                    "steps": [step, {**step, "delay_s": 86_400}],
                    "window": window,
                    "timezone": "UTC",
                    "stop_on": ["reply", "bounce", "unsubscribe", "spam_report"],
                    "domain_hourly_limit": 20,
                }
            ],
        )
        conn.execute(
            insert(Enrollment),
            [
                {
                    "id": f"enr_bench{i:06d}",
                    "user_id": user_id,
                    "sequence_id": "seq_bench",
                    "run_id": "run_bench",
                    "email": f"p{i}@acme.com",
                    "contact": {"email": f"p{i}@acme.com"},
                    "status": "active",
                }
                for i in range(FEATURE_ROWS)
            ],
        )
        enrollment = "enr_bench000000"
        conn.execute(
            insert(SequenceSend),
            [
                {
                    "enrollment_id": enrollment,
                    "user_id": user_id,
                    "sender_id": "sdr_bench",
                    "step": n,
                    "email": "p0@acme.com",
                    "domain": "acme.com",
                    "state": "sent" if n == 0 else "scheduled",
                    "due_at": now,
                    "sent_at": now if n == 0 else None,
                }
                for n in range(2)
            ],
        )
        kinds = ("scheduled", "sending", "sent", "processed", "delivered", "open")
        conn.execute(
            insert(TimelineEntry),
            [{"enrollment_id": enrollment, "step": 0, "kind": k, "at": now} for k in kinds],
        )
        conn.execute(
            insert(CreditEntry),
            [
                {
                    "id": i + 1_000_000,
                    "user_id": user_id,
                    "delta": -1,
                    "reason": "email_found",
                    "reference": f"bench:{i}",
                    "created_at": start + timedelta(minutes=i),
                }
                for i in range(FEATURE_ROWS)
            ],
        )
        conn.execute(
            insert(CreditPosting),
            [
                {"entry_id": i + 1_000_000, "account": account, "amount": amount}
                for i in range(FEATURE_ROWS)
                for account, amount in ((f"user:{user_id}:available", -1), ("revenue", 1))
            ],
        )
    engine.dispose()
    return "drf_bench000000", "seq_bench", enrollment


def first_paint(page: Any, url: str) -> float:
    page.goto(url, wait_until="load")
    value = page.evaluate(
        """() => new Promise((resolve) => {
             const find = () => performance.getEntriesByName("first-contentful-paint")[0];
             const hit = find();
             if (hit) return resolve(hit.startTime);
             new PerformanceObserver(() => { const e = find(); if (e) resolve(e.startTime); })
               .observe({type: "paint", buffered: true});
           })"""
    )
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=7)
    args = parser.parse_args()
    with roleferry_server({}) as (url, key, data):
        began = time.monotonic()
        newest = seed(f"sqlite:///{data}/rf.sqlite")
        draft, sequence, enrollment = seed_features(f"sqlite:///{data}/rf.sqlite")
        print(
            f"stored {JOBS:,} jobs, {ROWS:,} rows of {newest}, {EVENTS:,} webhook events, "
            f"{FEATURE_ROWS:,} drafts, enrolments and ledger entries "
            f"in {time.monotonic() - began:.1f} s"
        )
        pages = {
            "sign-in": "/signin",
            "integrations": "/",
            "search": "/search",
            "jobs": "/jobs",
            "job (10,000 rows)": f"/jobs/{newest}",
            "notifications": "/notifications",
            "webhook log": "/admin/webhooks",
            "webhook log, filtered": "/admin/webhooks?status=failed&q=p4",
            "webhook event": "/admin/webhooks/50001",
            "drafts": "/drafts",
            "a draft": f"/drafts/{draft}",
            "sequences": "/sequences",
            "a sequence": f"/sequences/{sequence}",
            "an enrolment": f"/enrollments/{enrollment}",
            "credits": "/credits",
        }
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(base_url=url)
            page = context.new_page()
            page.goto("/signin")
            page.get_by_label("API key").fill(key)
            page.get_by_role("button", name="Sign in", exact=True).click()
            page.wait_for_url("**/")
            worst_overall = 0.0
            print(f"{'page':24} {'median':>8} {'worst':>8}   (first-contentful-paint, ms)")
            for name, path in pages.items():
                first_paint(page, path)
                samples = [first_paint(page, path) for _ in range(args.loads)]
                median, worst = statistics.median(samples), max(samples)
                worst_overall = max(worst_overall, median)
                print(f"{name:24} {median:8.0f} {worst:8.0f}")
            browser.close()
        verdict = "within" if worst_overall <= BUDGET_MS else "OVER"
        print(f"slowest median {worst_overall:.0f} ms: {verdict} the {BUDGET_MS:.0f} ms budget")


if __name__ == "__main__":
    main()
