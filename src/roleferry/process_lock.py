"""One process per SQLite deployment.

Two runners on one SQLite file would both recover and execute the same durable workflows,
so a second process is refused. The OS drops the lock when the holder dies, even on SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class AlreadyRunning(RuntimeError):
    """Another process holds the SQLite deployment."""


class ProcessLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"another roleferry process (pid {holder}) is already running on "
                f"{self.path.with_suffix('')}. SQLite deployments run one process: stop the "
                "other one, or set ROLEFERRY_DATABASE_URL to PostgreSQL to run several."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
