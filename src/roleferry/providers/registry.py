"""Provider name → client, each with its policy, built from the specs and settings; nothing
here is per vendor. Without a key a provider is the sandbox: same client, the sandbox's base
URL and the spec's test key. Call statistics are handed in: clients know no monitoring."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import httpx
from redis.asyncio import Redis

from roleferry.config import Settings
from roleferry.providers.base import EmailFinder, EmailVerifier, PeopleFinder
from roleferry.providers.catalog import SPECS
from roleferry.providers.http import ProviderHTTP
from roleferry.providers.spec import Capability, ProviderSpec
from roleferry.resilience.breaker import BreakerConfig
from roleferry.resilience.policy import CallObserver, Policy, PolicyConfig
from roleferry.resilience.ratelimit import Window
from roleferry.resilience.store import MemoryStore, RedisStore, StateStore


def client_class(spec: ProviderSpec) -> type[Any]:
    """The class named by `spec.client` (`module:Class`), imported on first use."""
    if spec.client is None:
        raise ValueError(f"{spec.name} has no client")
    module, _, name = spec.client.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


class Providers:
    """This process's provider clients and policies; built at start, closed at stop."""

    def __init__(
        self,
        settings: Settings,
        server_url: str,
        stats: CallObserver,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self.settings = settings
        self.redis: Redis | None = (
            Redis.from_url(settings.redis_url) if settings.redis_url else None
        )
        self.store: StateStore = RedisStore(self.redis) if self.redis else MemoryStore()
        self.stats = stats
        self.policies: dict[str, Policy] = {}
        self.clients: dict[str, Any] = {}
        self._http: list[ProviderHTTP] = []
        for spec in SPECS:
            policy = Policy(
                spec.name,
                PolicyConfig(
                    windows=Window.parse(settings.rate_limit(spec.name)),
                    attempt_timeout_s=settings.attempt_timeout_s,
                    bulk_share=settings.bulk_share,
                    user_share=settings.user_budget_share,
                    breaker=BreakerConfig(open_s=settings.breaker_open_s),
                ),
                self.store,
                stats,
            )
            http = ProviderHTTP(
                spec,
                settings.base_url(spec.name, server_url),
                settings.credential(spec.name).get_secret_value(),
                transport=(transports or {}).get(spec.name),
            )
            self._http.append(http)
            self.policies[spec.name] = policy
            if spec.client is not None:
                self.clients[spec.name] = client_class(spec)(http, policy)
        self.people_finders: dict[str, PeopleFinder] = self._offering(Capability.PEOPLE_FINDER)
        self.email_finders: dict[str, EmailFinder] = self._offering(Capability.EMAIL_FINDER)
        self.email_verifiers: dict[str, EmailVerifier] = self._offering(Capability.EMAIL_VERIFIER)

    def _offering(self, capability: Capability) -> dict[str, Any]:
        return {s.name: self.clients[s.name] for s in SPECS if s.offers(capability)}

    def offering(self, capability: Capability) -> dict[str, Any]:
        """The clients of the providers that offer a capability, in catalog order."""
        return self._offering(capability)

    async def aclose(self) -> None:
        for client in self.clients.values():
            if hasattr(client, "aclose"):
                await client.aclose()
        for http in self._http:
            await http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
