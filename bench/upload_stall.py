"""How long one oversized enrichment upload stalls the server, and what memory it takes.

While one request posts a 10 MiB JSON body of tiny rows (or a CSV of short rows) to
POST /api/v1/enrichment-jobs, another polls /healthz every 20 ms; the figures are the upload's
answer time and status, the slowest health check during it, and the server's peak resident memory
(VmHWM) before and after. Run: `python bench/upload_stall.py`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from _serve import roleferry_server

MIB = 1024 * 1024


def json_rows() -> bytes:
    row = b'{"first_name":"a","last_name":"b","domain":"ab.co"}'
    count = (10 * MIB - 64) // (len(row) + 1)
    return b'{"contacts":[' + b",".join([row] * count) + b"]}"


def tiny_json_rows() -> bytes:
    count = (10 * MIB - 64) // 3
    return b'{"contacts":[' + b",".join([b"{}"] * count) + b"]}"


def csv_rows() -> tuple[bytes, int]:
    lines = [b"first_name,last_name,domain"]
    lines += [b"a,b,c"] * ((10 * MIB - 1024) // 6)
    return b"\n".join(lines) + b"\n", len(lines) - 1


def peak_rss_mb(data: Path) -> float:
    pid = (data / "rf.sqlite.lock").read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(url: str, key: str, data: Path, label: str, **request: object) -> None:
    worst = 0.0
    done = threading.Event()

    def poll() -> None:
        nonlocal worst
        with httpx.Client(timeout=60) as health:
            while not done.is_set():
                started = time.perf_counter()
                health.get(f"{url}/healthz")
                worst = max(worst, time.perf_counter() - started)
                time.sleep(0.02)

    before = peak_rss_mb(data)
    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}", **request.pop("headers", {})}  # type: ignore[dict-item]
    response = httpx.post(
        f"{url}/api/v1/enrichment-jobs",
        headers=headers,
        timeout=120,
        **request,  # type: ignore[arg-type]
    )
    took = time.perf_counter() - started
    done.set()
    poller.join()
    print(
        f"{label}: {response.status_code} in {took:.2f} s; slowest /healthz {worst * 1000:.0f} ms;"
        f" peak RSS {before:.0f} -> {peak_rss_mb(data):.0f} MB;"
        f" {response.json()['error']['message'][:90] if response.status_code >= 400 else ''}"
    )


def main() -> None:
    csv_body, csv_count = csv_rows()
    json_type = {"content-type": "application/json"}
    with roleferry_server({}) as (url, key, data):
        for label, body in (
            ("10 MiB JSON of {} rows", tiny_json_rows()),
            ("10 MiB JSON of full rows", json_rows()),
        ):
            measure(url, key, data, label, content=body, headers=json_type)
        measure(
            url,
            key,
            data,
            f"10 MiB CSV of {csv_count} rows",
            files={"file": ("c.csv", csv_body, "text/csv")},
        )


if __name__ == "__main__":
    main()
