"""What storing webhook events costs SQLite itself, with no HTTP and no Python server around it.

Signed-and-parsed SendGrid events (random `sg_event_id`s, as SendGrid's are) are stored in
groups of `--group` by the acknowledgement's own code (`inbox.insert_new` on the migrated
schema), until the table holds `--events`. The baseline, in the same run: the same rows
appended with one `executemany` to a table of the same columns without the unique
(provider, event id) index or any other. Printed per slice of the run: microseconds per event
for both and their ratio, and what that means in events per second for one writer.

    .venv/bin/python bench/inbox_insert.py [--events 300000] [--group 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson

from roleferry import migrations
from roleferry.db import Database
from roleferry.webhooks import inbox
from webhook_ingest import batch

PLAIN = """CREATE TABLE plain (id INTEGER PRIMARY KEY, provider, event_id, type, payload,
    occurred_at, received_at, status, attempts, applied_at, outcome)"""


def events(n: int) -> list[tuple[str, inbox.Incoming]]:
    out: list[tuple[str, inbox.Incoming]] = []
    while len(out) < n:
        body, _ = batch(100)
        out.extend(("sendgrid", e) for e in inbox.parse_sendgrid(body))
    return out[:n]


def plain_rows(group: list[tuple[str, inbox.Incoming]]) -> list[tuple[object, ...]]:
    return [
        (p, e.event_id, e.type, orjson.dumps(e.payload).decode(), e.occurred_at, "now", "pending")
        for p, e in group
    ]


async def measure(folder: Path, total: int, group: int, slices: int) -> list[tuple[float, float]]:
    url = f"sqlite:///{folder}/bench.sqlite"
    database = Database(url)
    migrations.upgrade(database.urls.render(database.urls.sync_url))
    plain = sqlite3.connect(folder / "plain.sqlite", isolation_level=None)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("PRAGMA synchronous=NORMAL")
    plain.execute(PLAIN)
    per_slice = total // slices
    results = []
    try:
        for _ in range(slices):
            todo = events(per_slice)
            ours = base = 0.0
            for start in range(0, per_slice, group):
                chunk = todo[start : start + group]
                began = time.perf_counter()
                await inbox.insert_new(database, chunk)
                ours += time.perf_counter() - began
                began = time.perf_counter()
                rows = plain_rows(chunk)
                plain.execute("BEGIN IMMEDIATE")
                plain.executemany(
                    "INSERT INTO plain (provider, event_id, type, payload, occurred_at, "
                    "received_at, status, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                    rows,
                )
                plain.execute("COMMIT")
                base += time.perf_counter() - began
            results.append((ours / per_slice, base / per_slice))
    finally:
        plain.close()
        await database.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--group", type=int, default=500, help="events per transaction")
    parser.add_argument("--slices", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(measure(Path(tmp), args.events, args.group, args.slices))
    print(f"events={args.events} group={args.group} (SQLite {sqlite3.sqlite_version})")
    header = ("table holds", "ours us/ev", "plain us/ev", "ratio", "ours ev/s")
    print(" ".join(f"{h:>12}" for h in header))
    step = args.events // args.slices
    for n, (ours, base) in enumerate(results, 1):
        print(
            f"{n * step:>12,} {ours * 1e6:>12.1f} {base * 1e6:>12.1f} "
            f"{ours / base:>12.1f} {1 / ours:>12,.0f}"
        )


if __name__ == "__main__":
    main()
