"""The outbound address guard: callbacks (and sandbox webhook targets) reach only globally
routable addresses unless configured, and connect to the very address that was checked."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import httpx
import pytest

from roleferry import outbound
from roleferry.outbound import AddressPolicy, UnsafeURL
from tests.support.http_catcher import Catcher
from tests.support.live_server import LiveServer, live_server
from tests.support.waiting import wait_for

WORLD_DOMAIN_CONTACT = {"first_name": "Ann", "last_name": "Example", "domain": "example.com"}


class FakeDns:
    """A resolver whose answers change from one lookup to the next, as a rebinding name's do."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.mark.parametrize(
    "address",
    [
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "100.127.255.254",
        "169.254.169.254",  # link-local: cloud metadata
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "0.0.0.0",  # noqa: S104
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "192.0.0.170",
        "::1",
        "::",
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "::ffff:127.0.0.1",
        "2002:a00:1::",  # 6to4 around 10.0.0.1
        "fc00::1",
        "fe80::1",
        "ff02::1",
    ],
)
async def test_a_name_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    """Each non-globally-routable address, behind a DNS name or as a literal, is refused."""
    with pytest.raises(UnsafeURL, match="not a public address"):
        await outbound.resolve("https://hook.example/x", AddressPolicy(), FakeDns([address]))
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURL, match="not a public address"):
        await outbound.resolve(f"http://{literal}:8080/x", AddressPolicy(), FakeDns(["8.8.8.8"]))


async def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    """Every address a name resolves to is checked, not only the first."""
    dns = FakeDns(["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "10.0.0.7"])
    with pytest.raises(UnsafeURL, match=r"10\.0\.0\.7"):
        await outbound.resolve("https://hook.example/x", AddressPolicy(), dns)


async def test_public_addresses_pass_and_the_request_names_the_original_host() -> None:
    """The request goes to the checked IP, with the original Host header and TLS server name."""
    target = await outbound.resolve(
        "https://hook.example:8443/in?a=1", AddressPolicy(), FakeDns(["93.184.215.14"])
    )
    async with httpx.AsyncClient() as client:
        request = target.request(client, b"{}", {"content-type": "application/json"})
    assert str(request.url) == "https://93.184.215.14:8443/in?a=1"
    assert request.headers["host"] == "hook.example:8443"
    assert request.extensions["sni_hostname"] == "hook.example"
    mapped = await outbound.resolve("http://[::ffff:8.8.8.8]/", AddressPolicy(), FakeDns([]))
    assert ipaddress.ip_address(mapped.address) == ipaddress.ip_address("::ffff:8.8.8.8")


async def test_loopback_and_private_networks_only_when_configured() -> None:
    """Loopback needs allow_loopback; a private network needs to be listed."""
    with pytest.raises(UnsafeURL):
        await outbound.resolve("http://hook.example/", AddressPolicy(), FakeDns(["127.0.0.1"]))
    allowed = AddressPolicy.of(allow_loopback=True)
    assert (await outbound.resolve("http://x.example/", allowed, FakeDns(["127.0.0.1"]))).address
    with pytest.raises(UnsafeURL):
        await outbound.resolve("http://x.example/", allowed, FakeDns(["10.1.2.3"]))
    listed = AddressPolicy.of(False, ["10.1.0.0/16"])
    assert (await outbound.resolve("http://x.example/", listed, FakeDns(["10.1.2.3"]))).address
    with pytest.raises(UnsafeURL):
        await outbound.resolve("http://x.example/", listed, FakeDns(["10.2.0.1"]))


async def test_a_rebinding_name_is_looked_up_once_and_the_checked_address_is_used(
    catcher: int,
) -> None:
    """First answer allowed, every later one private: the POST still reaches the first."""
    dns = FakeDns(["127.0.0.1"], ["10.0.0.1"])
    target = await outbound.resolve(
        f"http://rebind.example:{catcher}/hook", AddressPolicy.of(True), dns
    )
    response = await outbound.post(target, b"{}", {"content-type": "application/json"}, 5)
    assert response.status_code == 204
    assert dns.lookups == ["rebind.example"]
    assert Catcher.received[0]["host"] == f"rebind.example:{catcher}"


def create_job(live: LiveServer, callback_url: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/enrichment-jobs",
        headers=live.auth,
        json={"contacts": [WORLD_DOMAIN_CONTACT], "callback_url": callback_url},
    )


def test_callbacks_through_the_api_use_the_checked_address(catcher: int, tmp_path: Path) -> None:
    """A job's callback to a name only our resolver knows arrives at the address checked at
    delivery; a name that rebinds to a private address by delivery time gets nothing."""
    with live_server(tmp_path, callback_allowed_networks=["100.64.0.0/10"]) as live:
        live.runtime.resolver = FakeDns(["192.168.7.7"])
        private = create_job(live, f"http://inside.example:{catcher}/hook")
        assert private.status_code == 422
        assert "192.168.7.7" in private.json()["error"]["message"]
        assert private.json()["error"]["details"]["field"] == "callback_url"

        # Shared address space is refused by default, accepted here because configured.
        dns = FakeDns(["100.72.0.9"], ["127.0.0.1"])
        live.runtime.resolver = dns
        ok = create_job(live, f"http://callback.example:{catcher}/hook")
        assert ok.status_code == 202
        wait_for(lambda: len(Catcher.received) == 1)
        assert Catcher.received[0]["host"] == f"callback.example:{catcher}"
        assert dns.lookups == ["callback.example", "callback.example"]

        rebinding = FakeDns(["127.0.0.1"], ["10.0.0.1"])
        live.runtime.resolver = rebinding
        assert create_job(live, f"http://rebind.example:{catcher}/hook").status_code == 202
        wait_for(lambda: len(rebinding.lookups) == 2)
        time.sleep(0.5)
        assert len(Catcher.received) == 1, "the rebound name was refused at delivery"
