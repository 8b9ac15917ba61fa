"""Which server the CLI talks to, and how it reads an error's details."""

from __future__ import annotations

from pathlib import Path

import pytest

from roleferry.api_client import (
    ClientError,
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
