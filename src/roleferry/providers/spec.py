"""A provider, declared once: what it can do, how it authenticates, where it lives (live and
sandbox), how much we may call it, how it states its own limits, and how its failures read
(the quirks table `map_error` applies). Settings, the registry, the sandbox keys, the
integrations view, the metrics labels and docs/providers.md are all derived from these specs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roleferry.resilience.errors import CallError


class Capability(StrEnum):
    """What domain code may ask a provider for (the protocols in providers/base.py)."""

    PEOPLE_FINDER = "PeopleFinder"
    EMAIL_FINDER = "EmailFinder"
    EMAIL_VERIFIER = "EmailVerifier"
    EMAIL_SENDER = "EmailSender"
    LLM = "LLM"
    PAYMENTS = "Payments"


@dataclass(frozen=True)
class Auth:
    """The key goes in `header`, after `scheme` when there is one (`Authorization: Bearer k`)."""

    header: str
    scheme: str | None = None

    def headers(self, key: str) -> dict[str, str]:
        return {self.header: f"{self.scheme} {key}" if self.scheme else key}

    def describe(self) -> str:
        return f"`{self.header}: {self.scheme + ' ' if self.scheme else ''}<key>`"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    purpose: str


@dataclass(frozen=True)
class Reply:
    """A provider's answer, from httpx or from an SDK's exception: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: Any

    def error_type(self) -> str | None:
        """`error.type` of Anthropic's and Stripe's bodies (`{"error": {"type": …}}`)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        return kind if isinstance(kind, str) else None

    def error_code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) else None

    def text(self) -> str:
        return self.body if isinstance(self.body, str) else repr(self.body)


@dataclass(frozen=True)
class LimitHeaders:
    """How the provider states its limits. `limit`/`remaining` may hold `{window}`, filled from
    `windows` (label → seconds). `reset` is a time (`reset_format`: unix seconds or RFC 3339)
    when the window frees; `retry_after` is seconds to wait on a refusal."""

    limit: str | None = None
    remaining: str | None = None
    windows: Mapping[str, float] = field(default_factory=dict)
    reset: str | None = None
    reset_format: str = "unix"
    retry_after: str | None = "retry-after"
    note: str = ""

    def read(self, headers: Mapping[str, str]) -> list[tuple[int, int, float]]:
        """(limit, remaining, period_s) for each window the answer states."""
        found: list[tuple[int, int, float]] = []
        if self.limit is None or self.remaining is None:
            return found
        for label, period in self.windows.items():
            limit = headers.get(self.limit.format(window=label))
            left = headers.get(self.remaining.format(window=label))
            if limit and left and limit.isdigit() and left.isdigit():
                found.append((int(limit), int(left), period))
        return found

    def wait_s(self, headers: Mapping[str, str], now: float | None = None) -> float | None:
        """Seconds until the provider takes calls again, from Retry-After, else the reset."""
        if self.retry_after and (value := headers.get(self.retry_after)) is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                try:
                    return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
                except (TypeError, ValueError):
                    return None
        if self.reset and (value := headers.get(self.reset)) is not None:
            now = time.time() if now is None else now
            try:
                if self.reset_format == "rfc3339":
                    at = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
                else:
                    at = float(value)
            except ValueError:
                return None
            return max(0.0, at - now)
        return None

    def describe(self) -> str:
        parts = []
        if self.limit and self.remaining:
            labels = ", ".join(self.windows)
            windows = f" (windows: {labels})" if labels else ""
            parts.append(f"`{self.limit}` / `{self.remaining}`{windows}")
        if self.reset:
            parts.append(f"`{self.reset}` ({self.reset_format})")
        if self.retry_after:
            parts.append(f"`{self.retry_after}` on refusals")
        return "; ".join(parts) or "none"


@dataclass(frozen=True)
class Quirk:
    """One row of a provider's error table: what matches (any of status, `error.type` in the
    body, a text in the body, an SDK exception's class name; all given must match) → the
    typed error, and why."""

    error: type[CallError]
    why: str
    status: int | None = None
    error_type: str | None = None
    text: str | None = None
    exception: str | None = None

    def matches_reply(self, reply: Reply) -> bool:
        if self.exception is not None:
            return False
        return (
            (self.status is None or self.status == reply.status)
            and (self.error_type is None or self.error_type == reply.error_type())
            and (self.text is None or self.text in reply.text())
        )

    def matches_exception(self, exc: BaseException) -> bool:
        return self.exception is not None and any(
            cls.__name__ == self.exception for cls in type(exc).__mro__
        )

    def describe(self) -> str:
        when = [
            f"status {self.status}" if self.status is not None else "",
            f"`error.type` = `{self.error_type}`" if self.error_type else "",
            f"body contains `{self.text}`" if self.text else "",
            f"SDK raises `{self.exception}`" if self.exception else "",
        ]
        return " and ".join(w for w in when if w)


Unwrap = Callable[[BaseException], Reply | None]


@dataclass(frozen=True)
class ProviderSpec:
    """Everything about one provider that is not its payloads."""

    name: str
    title: str
    capabilities: frozenset[Capability]
    auth: Auth
    live_url: str
    sandbox_key: str
    rate_limit: str
    limits: LimitHeaders
    endpoints: tuple[Endpoint, ...]
    quirks: tuple[Quirk, ...] = ()
    client: str | None = None
    sdk: str | None = None
    unwrap: Unwrap | None = None
    placeholder_emails: tuple[str, ...] = ()
    follows_provider: tuple[str, ...] = ()

    @property
    def sandbox_path(self) -> str:
        """Where the simulator is mounted under this server."""
        return f"/sandbox/{self.name}"

    def sandbox_url(self, server_url: str) -> str:
        return f"{server_url.rstrip('/')}{self.sandbox_path}"

    def offers(self, capability: Capability) -> bool:
        return capability in self.capabilities
