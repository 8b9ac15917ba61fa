"""Provider name → client, each with its policy, built from settings. Without a key a provider
is the sandbox: same client, the sandbox's base URL and documented test key."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from redis.asyncio import Redis

from roleferry.config import Provider, Settings
from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers.apollo.client import ApolloClient
from roleferry.providers.base import EmailFinder, PeopleFinder
from roleferry.providers.clay.client import ClayClient
from roleferry.providers.http import ProviderHTTP
from roleferry.providers.hunter.client import HunterClient
from roleferry.resilience.breaker import BreakerConfig
from roleferry.resilience.policy import Policy, PolicyConfig
from roleferry.resilience.ratelimit import Window
from roleferry.resilience.store import MemoryStore, RedisStore, StateStore


def _headers(provider: Provider, key: str) -> dict[str, str]:
    return {
        Provider.APOLLO: {"x-api-key": key},
        Provider.CLAY: {"clay-api-key": key},
        Provider.HUNTER: {"X-API-KEY": key},
    }.get(provider, {})


class Providers:
    """This process's provider clients and policies; built at start, closed at stop."""

    def __init__(
        self,
        settings: Settings,
        server_url: str,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self.settings = settings
        self.redis: Redis | None = (
            Redis.from_url(settings.redis_url) if settings.redis_url else None
        )
        self.store: StateStore = RedisStore(self.redis) if self.redis else MemoryStore()
        self.stats = IntegrationStats()
        self.policies: dict[str, Policy] = {}
        self._http: list[ProviderHTTP] = []
        rates = {
            Provider.APOLLO: settings.apollo_rate_limit,
            Provider.CLAY: settings.clay_rate_limit,
            Provider.HUNTER: settings.hunter_rate_limit,
        }
        clients: dict[Provider, type[ApolloClient | ClayClient | HunterClient]] = {
            Provider.APOLLO: ApolloClient,
            Provider.CLAY: ClayClient,
            Provider.HUNTER: HunterClient,
        }
        self.people_finders: dict[str, PeopleFinder] = {}
        self.email_finders: dict[str, EmailFinder] = {}
        for provider, client_type in clients.items():
            policy = Policy(
                provider.value,
                PolicyConfig(
                    windows=Window.parse(rates[provider]),
                    attempt_timeout_s=settings.attempt_timeout_s,
                    bulk_share=settings.bulk_share,
                    user_share=settings.user_budget_share,
                    breaker=BreakerConfig(open_s=settings.breaker_open_s),
                ),
                self.store,
                self.stats,
            )
            http = ProviderHTTP(
                provider.value,
                settings.base_url(provider, server_url),
                _headers(provider, settings.credential(provider).get_secret_value()),
                transport=(transports or {}).get(provider.value),
            )
            self._http.append(http)
            self.policies[provider.value] = policy
            client = client_type(http, policy)
            self.people_finders[provider.value] = client
            self.email_finders[provider.value] = client

    async def aclose(self) -> None:
        for http in self._http:
            await http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
