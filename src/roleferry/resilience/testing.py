"""A switch for tests, in the spirit of stamina's `set_testing`: with it on, every policy makes
at most `attempts` attempts and never sleeps between them, so a test of a failure is fast and
needs no change to a (frozen) policy config. Off by default; tests/conftest.py turns it off
after every test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class _Mode:
    on: bool = False
    attempts: int = 1


_MODE = _Mode()


def set_testing(on: bool, *, attempts: int = 1) -> None:
    """Turns test mode on (at most `attempts` attempts per call, no backoff sleeps) or off."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    _MODE.on = on
    _MODE.attempts = attempts


def is_testing() -> bool:
    return _MODE.on


def attempts(configured: int) -> int:
    """How many attempts a call may make now."""
    return min(configured, _MODE.attempts) if _MODE.on else configured


async def sleep(sleep: Callable[[float], Awaitable[None]], seconds: float) -> None:
    """A backoff wait, skipped in test mode."""
    if not _MODE.on:
        await sleep(seconds)
