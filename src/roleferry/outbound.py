"""The outbound address guard, for every URL we call on someone else's say: callbacks to a
user's URL and the sandbox's webhook deliveries to a configured target.

A host name is resolved once; every address it resolves to must be globally routable (or
explicitly allowed); the request then connects to the checked address, with the original
Host header and TLS name (SNI and certificate check), so a second lookup by the HTTP client
(DNS rebinding) cannot send it somewhere else. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeURL(ValueError):
    """The URL is not one we will call."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (both families)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or 6to4 IPv6 address, else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return inner
    return address


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses we connect to: public ones, plus loopback and networks when configured."""

    allow_loopback: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, allow_loopback: bool, networks: Iterable[str] = ()) -> AddressPolicy:
        return cls(allow_loopback, tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def permits(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed_networks):
            return True
        inner = _embedded(address)
        if inner.is_loopback:
            return self.allow_loopback
        return inner.is_global and not inner.is_multicast and not inner.is_reserved


@dataclass(frozen=True)
class Target:
    """A URL and the checked address to connect to for it."""

    url: httpx.URL
    address: str

    def request(
        self, client: httpx.AsyncClient, content: bytes, headers: dict[str, str]
    ) -> httpx.Request:
        """A POST to the pinned address that still names the original host (Host, SNI)."""
        host = self.url.host
        default_port = 443 if self.url.scheme == "https" else 80
        host_header = host if self.url.port in (None, default_port) else f"{host}:{self.url.port}"
        extensions = {"sni_hostname": host} if self.url.scheme == "https" else {}
        return client.build_request(
            "POST",
            self.url.copy_with(host=self.address),
            content=content,
            headers={**headers, "host": host_header},
            extensions=extensions,
        )


async def resolve(
    url: str, policy: AddressPolicy, resolver: Resolver = system_resolver, what: str = "URL"
) -> Target:
    """Checks url and returns where to connect; raises UnsafeURL saying what is wrong."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeURL(f"{what} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnsafeURL(f"{what} must be an http(s) URL with a host")
    if parsed.userinfo:
        raise UnsafeURL(f"{what} must not carry credentials")
    host = parsed.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            found = await resolver(host, port)
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        except (OSError, UnicodeError) as exc:
            raise UnsafeURL(f"{what} host {host!r} does not resolve") from exc
    if not addresses:
        raise UnsafeURL(f"{what} host {host!r} does not resolve")
    for address in addresses:
        if not policy.permits(address):
            raise UnsafeURL(
                f"{what} host {host!r} resolves to {address}, which is not a public address; "
                "we call only globally routable addresses"
            )
    return Target(parsed, str(addresses[0]))


async def post(
    target: Target, content: bytes, headers: dict[str, str], timeout_s: float
) -> httpx.Response:
    """POSTs to the checked address, never following redirects nor proxy settings."""
    async with httpx.AsyncClient(
        timeout=timeout_s, follow_redirects=False, trust_env=False
    ) as client:
        return await client.send(target.request(client, content, headers))
