"""What `roleferry serve` tells a person once it is ready: a short banner, printed last, so the
addresses and where the key is do not scroll away behind start-up logs.

The admin key is a secret and stdout is outside the log redactor: the full key is shown only on
a terminal, on the start that created it; anywhere else (a pipe, a file, CI) the banner names
the key file and the key's first characters, which identify it without granting anything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from roleferry.config import Provider, Settings

KEY_PREFIX_CHARS = 10  # what the API shows as a key's `prefix`, too


@dataclass(frozen=True)
class LocalKey:
    path: Path
    new_key: str | None  # the raw key, only on the start that created it

    def prefix(self) -> str | None:
        if self.new_key:
            return self.new_key[:KEY_PREFIX_CHARS]
        try:
            return self.path.read_text().strip()[:KEY_PREFIX_CHARS] or None
        except OSError:
            return None


def banner(
    settings: Settings,
    public_url: str,
    key: LocalKey,
    admin_email: str,
    *,
    terminal: bool,
) -> list[str]:
    live = [p.value for p in Provider if settings.is_live(p)]
    sandbox = [p.value for p in Provider if not settings.is_live(p)]
    modes = []
    if live:
        modes.append(f"live: {', '.join(live)}")
    if sandbox:
        modes.append(f"sandbox: {', '.join(sandbox)}")
    lines = [
        "",
        f"RoleFerry is ready at {public_url}",
        f"  Console         {public_url}/",
        f"  API reference   {public_url}/docs  (or /redoc)",
        f"  Providers       {'; '.join(modes)}",
    ]
    prefix = key.prefix()
    if key.new_key:
        lines.append(f"  Created the local admin user {admin_email}; its API key is in {key.path}")
        if terminal:
            lines.append(f"  API key         {key.new_key}   (shown once; not in any log)")
        else:
            lines.append(f"  API key         {prefix}…   (the full key is in the file)")
    elif prefix:
        lines.append(f"  API key         {prefix}…   in {key.path}")
    lines.append("  Stop with Ctrl-C.")
    return lines


class ReadyServer(uvicorn.Server):
    """A uvicorn server that calls `on_ready` once the app has started and the socket listens,
    and `on_stopped` once it has shut down (uvicorn re-raises SIGTERM after that, so code
    after `run()` would not run)."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_ready: Callable[[], None],
        on_stopped: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._on_stopped = on_stopped

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()

    async def shutdown(self, sockets: Any = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            self._on_stopped()


def print_lines(lines: list[str], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write("\n".join(lines) + "\n")
    out.flush()
