"""Which server the CLI talks to, and how it reads an error's details."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from roleferry.api_client import (
    ApiClient,
    ClientError,
    Server,
    connect_url,
    detail_lines,
    normalise,
    record_server,
    resolve_server,
)


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8731", "http://127.0.0.1:8731"),
        ("localhost:8731/", "http://localhost:8731"),
        ("https://rf.example.com/", "https://rf.example.com"),
        (" http://[::1]:8000 ", "http://[::1]:8000"),
    ],
)
def test_an_address_without_a_scheme_is_http(given: str, url: str) -> None:
    """`host:port` works as well as a URL; a trailing slash is dropped."""
    assert normalise(given) == url


def test_any_address_listeners_are_reached_on_loopback() -> None:
    """A server on 0.0.0.0 or :: is reached at the loopback address of the same family."""
    assert connect_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"  # noqa: S104
    assert connect_url("::", 8000) == "http://[::1]:8000"
    assert connect_url("10.1.2.3", 81) == "http://10.1.2.3:81"


def test_the_server_is_the_option_then_host_port_then_the_recorded_one(tmp_path: Path) -> None:
    """--server wins; then HOST/PORT as `serve` reads them; then what `serve` recorded;
    then 127.0.0.1:8000. Each says where it came from."""
    data_dir = lambda: tmp_path  # noqa: E731
    assert resolve_server(None, data_dir, {}).url == "http://127.0.0.1:8000"
    assert "default" in resolve_server(None, data_dir, {}).source
    record_server(tmp_path, "http://127.0.0.1:8731")
    recorded = resolve_server(None, data_dir, {})
    assert recorded.url == "http://127.0.0.1:8731"
    assert str(tmp_path / "server-url") in recorded.source
    assert resolve_server(None, data_dir, {"PORT": "9000"}).url == "http://127.0.0.1:9000"
    assert resolve_server("h:1", data_dir, {"PORT": "9000"}).url == "http://h:1"
    with pytest.raises(ClientError, match="PORT='eighty' is not a port number"):
        resolve_server(None, data_dir, {"PORT": "eighty"})


def test_details_become_one_line_per_attempt_or_field() -> None:
    """Every provider's attempt, or every refused field, is a line a person can act on."""
    attempts = {
        "attempts": [
            {"provider": "apollo", "outcome": "unavailable", "latency_ms": 212.4, "detail": "503"},
            {"provider": "clay", "outcome": "skipped_circuit_open", "latency_ms": 0.0},
        ]
    }
    assert detail_lines(attempts) == [
        "apollo: unavailable after 212 ms (503)",
        "clay: skipped_circuit_open after 0 ms",
    ]
    fields = [{"field": "domain", "reason": "must be a bare domain"}, {"reason": "too many"}]
    assert detail_lines(fields) == ["domain: must be a bare domain", "too many"]
    assert detail_lines(None) == []


def answering(status: int, body: bytes, content_type: str = "application/json") -> ApiClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return ApiClient(
        Server("http://rf.test", "from --server"),
        "rf_key",
        "from --api-key",
        5,
        transport=httpx.MockTransport(handle),
    )


@pytest.mark.parametrize(
    ("status", "body", "content_type", "said"),
    [
        (200, b'{"contacts": [], "attempts": []}', "application/json", None),
        (200, b"<html>hello</html>", "text/html", "without contacts, attempts"),
        (200, b'{"detail": "ok"}', "application/json", "without contacts, attempts"),
        (404, b'{"detail": "Not Found"}', "application/json", "but not as roleferry does"),
        (502, b"Bad Gateway", "text/plain", "with HTTP 502, but not as roleferry does"),
        (
            401,
            b'{"error": {"code": "unauthorized", "message": "invalid API key", "details": null}}',
            "application/json",
            "http://rf.test refused the API key from --api-key: invalid API key",
        ),
    ],
)
def test_each_kind_of_answer_is_named(
    status: int, body: bytes, content_type: str, said: str | None
) -> None:
    """Our answer passes; another service's, a wrong shape or a refused key each say so."""
    with answering(status, body, content_type) as client:
        if said is None:
            assert client.request("POST", "/x", fields=("contacts", "attempts")).json()
            return
        with pytest.raises(ClientError) as raised:
            client.request("POST", "/x", fields=("contacts", "attempts"))
    assert said in raised.value.message


def test_an_api_error_keeps_its_details() -> None:
    """Every provider failing gives the API's message and one line per attempt."""
    body = (
        b'{"error": {"code": "service_unavailable", "message": "every provider failed",'
        b' "details": {"attempts": [{"provider": "apollo", "outcome": "timeout",'
        b' "latency_ms": 2000, "detail": null}]}}}'
    )
    with answering(503, body) as client, pytest.raises(ClientError) as raised:
        client.request("POST", "/x")
    assert raised.value.message == "every provider failed"
    assert raised.value.lines == ["apollo: timeout after 2000 ms"]


def test_nothing_listening_names_the_address_and_where_it_came_from() -> None:
    """A refused connection says which address was tried and why that one."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    server = Server("http://127.0.0.1:8731", "recorded by `roleferry serve` in x")
    with (
        ApiClient(server, "k", "in f", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(ClientError) as raised,
    ):
        client.request("GET", "/x")
    assert raised.value.message.startswith(
        "cannot reach http://127.0.0.1:8731 (recorded by `roleferry serve` in x)"
    )
