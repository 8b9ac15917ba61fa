"""API keys recently seen, in this process: an authenticated request then costs no database
query. Revoking a key through this process forgets it at once; a key revoked by another
process keeps working here until its entry ages out (`ROLEFERRY_API_KEY_CACHE_S`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from roleferry.users.models import User

_COLUMNS = tuple(c.key for c in User.__table__.columns)


@dataclass(frozen=True)
class _Known:
    user: dict[str, Any]
    until: float


class KeyCache:
    """Key hash → the user's columns, for `ttl_s` (0: nothing is kept), at most `size` keys
    (the oldest goes first)."""

    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._known: dict[str, _Known] = {}
        self.generation = 0

    def get(self, key_hash: str) -> dict[str, Any] | None:
        known = self._known.get(key_hash)
        if known is None:
            return None
        if known.until <= time.monotonic():
            self._known.pop(key_hash, None)
            return None
        return known.user

    def put(self, key_hash: str, user: User, generation: int) -> None:
        """Remembers a key looked up at `generation`: not if a key was forgotten since, as
        the look-up may have read it before its revocation committed."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._known) >= self.size:
            self._known.pop(next(iter(self._known)))
        values = {name: getattr(user, name) for name in _COLUMNS}
        self._known[key_hash] = _Known(values, time.monotonic() + self.ttl_s)

    def forget(self, key_hash: str) -> None:
        self.generation += 1
        self._known.pop(key_hash, None)
