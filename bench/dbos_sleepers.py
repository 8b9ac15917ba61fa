"""What one workflow per enrolment would cost: N DBOS workflows each in a durable sleep of a
day (an enrolment waiting for its next step), on the embedded default (SQLite system
database), DBOS configured and launched by the project's own Runtime._launch_dbos.

For N (default 10,000) and then 0 (the baseline), each in its own temporary directory:
1. A process launches DBOS and starts N sleeping workflows. Printed: the time and rate to
   start them, until every one is asleep (its sleep recorded), the system database's rows
   and bytes, and the process's RSS with them pending. The process then exits without
   shutting DBOS down (as a crash or a deploy's kill would).
2. A new process launches DBOS on the same files: the time until launch returns, until
   every pending workflow is recovered (re-entered and back asleep), and its RSS after.
Then the ratios of N to 0.

    .venv/bin/python bench/dbos_sleepers.py [--count 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dbos import DBOS

from _serve import rss_mib
from roleferry.config import Settings
from roleferry.runtime import Runtime

DAY_S = 86_400.0
entered = 0  # workflows that have (re-)entered their body in this process


@DBOS.workflow()
async def sleeping_enrolment(index: int) -> int:
    """An enrolment waiting a day for its next step; recovery re-enters it here."""
    global entered
    entered += 1
    await DBOS.sleep_async(DAY_S)
    return index


def system_db(directory: Path) -> Path:
    return directory / "roleferry.dbos.sqlite"


def query(directory: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(system_db(directory)) as conn:
        return conn.execute(sql, params).fetchall()


def storage(directory: Path) -> dict[str, Any]:
    """Rows per table of DBOS's system database, and its files' bytes (WAL included)."""
    tables = [
        name for (name,) in query(directory, "SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    # The names come from sqlite_master, not from input.
    rows = {t: query(directory, f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}  # noqa: S608
    files = sum(p.stat().st_size for p in directory.glob("roleferry.dbos.sqlite*"))
    return {"rows": {t: n for t, n in rows.items() if n}, "bytes": files}


def pending_in(directory: Path, status: str) -> int:
    sql = "SELECT count(*) FROM workflow_status WHERE status = ?"
    return int(query(directory, sql, status)[0][0])


def sleeps_recorded(directory: Path) -> int:
    sql = "SELECT count(*) FROM operation_outputs WHERE function_name LIKE '%sleep%'"
    return int(query(directory, sql)[0][0])


def launch(directory: Path) -> float:
    settings = Settings(database_url=f"sqlite:///{directory}/roleferry.sqlite", log_level="WARNING")
    started = time.monotonic()
    Runtime(settings)._launch_dbos()
    return time.monotonic() - started


async def wait_until(done: Any, timeout: float = 3600) -> tuple[float, float]:
    """Seconds until done(), and how late this loop's 50 ms ticks came at worst: what the
    work going on in DBOS's threads leaves to the application's own event loop."""
    started = time.monotonic()
    late = 0.0
    while not done():
        if time.monotonic() - started > timeout:
            raise RuntimeError("timed out")
        tick = time.monotonic()
        await asyncio.sleep(0.05)
        late = max(late, time.monotonic() - tick - 0.05)
    return time.monotonic() - started, late


async def first_run(directory: Path, count: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"launch_s": launch(directory)}
    started = time.monotonic()
    for index in range(count):
        await DBOS.start_workflow_async(sleeping_enrolment, index)
    figures["start_s"] = time.monotonic() - started
    waited, _ = await wait_until(lambda: entered == count and sleeps_recorded(directory) >= count)
    figures["asleep_s"] = figures["start_s"] + waited
    figures["rss_mib"] = rss_mib(os.getpid())
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["pending"] = pending_in(directory, "PENDING")
    figures.update(storage(directory))
    return figures


async def restart(directory: Path, count: int) -> dict[str, Any]:
    cpu = time.process_time()
    figures: dict[str, Any] = {"launch_s": launch(directory)}
    waited, late = await wait_until(
        lambda: entered == count and pending_in(directory, "ENQUEUED") == 0
    )
    figures["recovered_s"] = figures["launch_s"] + waited
    figures["recovery_cpu_s"] = time.process_time() - cpu
    figures["loop_late_ms"] = late * 1000
    # Every one back asleep, none run twice: the recorded sleeps were replayed, not re-taken.
    figures["pending"] = pending_in(directory, "PENDING")
    figures["sleeps_recorded"] = sleeps_recorded(directory)
    figures["rss_mib"] = rss_mib(os.getpid())
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures.update(storage(directory))
    return figures


def child(phase: str, directory: Path, count: int) -> None:
    run = first_run if phase == "start" else restart
    figures = asyncio.run(run(directory, count))
    print(json.dumps(figures), flush=True)
    os._exit(0)  # no DBOS.destroy: the workflows stay pending, as after a kill


def spawn(phase: str, directory: Path, count: int) -> dict[str, Any]:
    """One phase in its own process; its wall time includes Python's start and imports."""
    started = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            phase,
            "--dir",
            str(directory),
            "--count",
            str(count),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures["process_s"] = time.monotonic() - started
    return figures


def measure(count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="dbos-sleepers-") as tmp:
        first = spawn("start", Path(tmp), count)
        again = spawn("restart", Path(tmp), count)
    if first["pending"] != count or again["pending"] != count:
        raise RuntimeError(f"expected {count} pending, got {first['pending']}, {again['pending']}")
    if again["sleeps_recorded"] != count:
        raise RuntimeError(f"expected {count} recorded sleeps, got {again['sleeps_recorded']}")
    return first, again


def report(count: int, first: dict[str, Any], again: dict[str, Any], base_bytes: int) -> None:
    rate = count / first["start_s"] if count and first["start_s"] else 0.0
    print(f"-- {count:,} sleeping workflows")
    print(
        f"  first run: launch {first['launch_s']:.2f} s; start {first['start_s']:.2f} s "
        f"({rate:,.0f}/s); all asleep at {first['asleep_s']:.2f} s; "
        f"RSS {first['rss_mib']:.0f} MiB (peak {first['peak_rss_mib']:.0f})"
    )
    print(
        f"  system database: {first['bytes'] / 2**20:.1f} MiB; rows {first['rows']}"
        + (f"; {(first['bytes'] - base_bytes) / count:,.0f} bytes a workflow" if count else "")
    )
    print(
        f"  restart: process {again['process_s']:.2f} s; "
        f"launch returned {again['launch_s']:.2f} s; all recovered {again['recovered_s']:.2f} s; "
        f"RSS {again['rss_mib']:.0f} MiB "
        f"(peak {again['peak_rss_mib']:.0f}); files {again['bytes'] / 2**20:.1f} MiB; "
        f"CPU until recovered {again['recovery_cpu_s']:.1f} s; "
        f"event loop late by up to {again['loop_late_ms']:.0f} ms"
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--child", choices=["start", "restart"])
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.count)
        return
    if args.count < 1:
        parser.error("--count must be at least 1 (0 is the baseline, run anyway)")
    print(f"load average: {os.getloadavg()}")
    results = {n: measure(n) for n in (args.count, 0)}
    (first, again), (base_first, base_again) = results[args.count], results[0]
    for n, (one, other) in results.items():
        report(n, one, other, base_first["bytes"])
    print(f"-- {args.count:,} against 0")
    print(f"  restart until launch returns: {ratio(again['launch_s'], base_again['launch_s'])}")
    print(f"  restart until recovered: {ratio(again['recovered_s'], base_again['recovered_s'])}")
    cpu = ratio(again["recovery_cpu_s"], base_again["recovery_cpu_s"])
    print(f"  restart CPU until recovered: {cpu}")
    print(f"  restart process wall time: {ratio(again['process_s'], base_again['process_s'])}")
    print(f"  RSS after restart: {ratio(again['rss_mib'], base_again['rss_mib'])}")
    print(f"  RSS with them pending: {ratio(first['rss_mib'], base_first['rss_mib'])}")
    print(f"  system database bytes: {ratio(first['bytes'], base_first['bytes'])}")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
