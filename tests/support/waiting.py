"""Polling for a condition that another process or thread brings about."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any], timeout: float = 60, interval: float = 0.05, what: str = ""
) -> Any:
    """The condition's first truthy value; fails the test once `timeout` seconds pass (a loaded
    2-core machine makes the generous default worth it: it only matters when a test fails)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or 'the condition'}"
        time.sleep(interval)
    return value
