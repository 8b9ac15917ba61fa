"""A throwaway `roleferry serve` for a benchmark: its own data folder, settings from the
environment given, stopped at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """A process's resident memory, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def roleferry_server(settings: dict[str, str]) -> Iterator[tuple[str, str, Path]]:
    """Yields (url, the local admin's API key, data folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ROLEFERRY_")},
            "ROLEFERRY_DATA_DIR": tmp,
            "ROLEFERRY_DATABASE_URL": f"sqlite:///{tmp}/rf.sqlite",
            "ROLEFERRY_LOG_LEVEL": "WARNING",
            **settings,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "roleferry", "serve", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("roleferry serve did not start") from None
                    time.sleep(0.1)
            yield url, (data / "local-api-key").read_text().strip(), data
        finally:
            proc.terminate()
            proc.wait(20)
