"""The HTTP layer every hand-written provider client shares: one pooled AsyncClient per
provider, authenticated as its spec says, and every failure (transport or status) turned into
our error tree by the one mapping, `map_error` (never with a key in it: errors name the
endpoint path, never the URL with its query)."""

from __future__ import annotations

from typing import Any

import httpx

from roleferry.providers.errors import BadResponse, map_error
from roleferry.providers.spec import ProviderSpec


class ProviderHTTP:
    def __init__(
        self,
        spec: ProviderSpec,
        base_url: str,
        key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 20,
    ) -> None:
        self.spec = spec
        self.provider = spec.name
        self.base_url = base_url
        self.key = key
        self.transport = transport
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=spec.auth.headers(key),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )

    async def request(
        self, method: str, path: str, *, timeout: float, **kwargs: Any
    ) -> httpx.Response:
        """The answer, whatever its status; a transport failure raised as our error."""
        try:
            return await self.client.request(method, path, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise map_error(self.spec, exc, path) from exc

    def check(self, response: httpx.Response, path: str) -> httpx.Response:
        """The response if it succeeded, else the spec's mapping of it raised."""
        if response.is_success:
            return response
        raise map_error(self.spec, response, path)

    def json(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise BadResponse(
                self.provider, f"{path} answered {response.status_code} with invalid JSON"
            ) from exc

    def json_object(self, response: httpx.Response, path: str) -> dict[str, Any]:
        body = self.json(self.check(response, path), path)
        if not isinstance(body, dict):
            raise BadResponse(self.provider, f"{path} answered with a JSON {type(body).__name__}")
        return body

    async def aclose(self) -> None:
        await self.client.aclose()
