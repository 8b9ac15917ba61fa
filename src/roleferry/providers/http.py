"""The HTTP layer every hand-written provider client shares: one pooled AsyncClient per
provider, and transport failures turned into our error tree (never with a key in them: errors
name the endpoint path, never the URL with its query)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from roleferry.providers.errors import BadResponse, ProviderError, Timeout, Unavailable


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, when the provider sent a number of them."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ProviderHTTP:
    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 20,
    ) -> None:
        self.provider = provider
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )

    async def request(
        self, method: str, path: str, *, timeout: float, **kwargs: Any
    ) -> httpx.Response:
        try:
            return await self.client.request(method, path, timeout=timeout, **kwargs)
        except httpx.TimeoutException as exc:
            raise Timeout(self.provider, f"{path} timed out after {timeout:.2f}s") from exc
        except httpx.TransportError as exc:
            raise Unavailable(self.provider, f"{path}: {type(exc).__name__}") from exc

    def json(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise BadResponse(
                self.provider, f"{path} answered {response.status_code} with invalid JSON"
            ) from exc

    def json_object(self, response: httpx.Response, path: str) -> dict[str, Any]:
        body = self.json(response, path)
        if not isinstance(body, dict):
            raise BadResponse(self.provider, f"{path} answered with a JSON {type(body).__name__}")
        return body

    def unexpected(self, response: httpx.Response, path: str) -> ProviderError:
        if response.status_code >= 500:
            return Unavailable(
                self.provider,
                f"{path} answered {response.status_code}",
                status=response.status_code,
            )
        return BadResponse(
            self.provider, f"{path} answered {response.status_code}", status=response.status_code
        )

    async def aclose(self) -> None:
        await self.client.aclose()
