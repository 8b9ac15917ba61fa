"""How the CLI finds a running roleferry and talks to it: which address, which key, and an
error that says what went wrong (nothing listening, something else listening, the key refused,
or the API's own error with its details) rather than a bare status."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SERVER_FILE = "server-url"
KEY_FILE = "local-api-key"


class ClientError(Exception):
    """What to tell the person at the terminal; `lines` are details, one per line."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines or []


@dataclass(frozen=True)
class Server:
    url: str
    source: str


def normalise(address: str) -> str:
    """`host:port`, `localhost:8731/` or a full URL: an http(s) base URL without a trailing /."""
    address = address.strip()
    if "://" not in address:
        address = "http://" + address
    return address.rstrip("/")


def connect_url(host: str, port: int) -> str:
    """The URL a local client uses for a server listening on host:port (any-address → loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a listening address, turned into one to connect to
        host = DEFAULT_HOST
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def resolve_server(
    option: str | None, data_dir: Callable[[], Path], env: Mapping[str, str] = os.environ
) -> Server:
    """The server to talk to: --server (or ROLEFERRY_SERVER), else the HOST/PORT that
    `roleferry serve` reads, else the address the local server recorded when it started,
    else the default 127.0.0.1:8000."""
    if option:
        return Server(normalise(option), "from --server or ROLEFERRY_SERVER")
    if env.get("HOST") or env.get("PORT"):
        try:
            port = int(env.get("PORT") or DEFAULT_PORT)
        except ValueError:
            raise ClientError(f"PORT={env['PORT']!r} is not a port number") from None
        return Server(connect_url(env.get("HOST") or DEFAULT_HOST, port), "from HOST/PORT")
    recorded = data_dir() / SERVER_FILE
    if recorded.is_file():
        url = recorded.read_text().strip()
        if url:
            return Server(normalise(url), f"recorded by `roleferry serve` in {recorded}")
    return Server(
        connect_url(DEFAULT_HOST, DEFAULT_PORT), "the default; set --server or ROLEFERRY_SERVER"
    )


def record_server(data_dir: Path, url: str) -> Path:
    """Written by `serve` once it listens, so that the CLI finds it on any port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SERVER_FILE
    path.write_text(url + "\n")
    return path


def forget_server(data_dir: Path, url: str) -> None:
    path = data_dir / SERVER_FILE
    if path.is_file() and path.read_text().strip() == url:
        path.unlink()


def _error_of(response: httpx.Response) -> dict[str, Any] | None:
    """Our error shape, or None when the answer is not roleferry's."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and "code" in error:
        return error
    return None


def detail_lines(details: Any) -> list[str]:
    """The parts of an error's details a person can act on: each provider attempt, each field."""
    lines: list[str] = []
    if isinstance(details, dict):
        for attempt in details.get("attempts") or []:
            line = f"{attempt.get('provider')}: {attempt.get('outcome')}"
            if attempt.get("latency_ms") is not None:
                line += f" after {float(attempt['latency_ms']):.0f} ms"
            if attempt.get("detail"):
                line += f" ({attempt['detail']})"
            lines.append(line)
    elif isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and "reason" in item:
                where = item.get("field") or item.get("line")
                lines.append(f"{where}: {item['reason']}" if where else str(item["reason"]))
    return lines


class ApiClient:
    """One running roleferry, with one key."""

    def __init__(
        self,
        server: Server,
        key: str,
        key_source: str,
        timeout: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server
        self.key_source = key_source
        self.auth = {"Authorization": f"Bearer {key}"}
        self._http = httpx.Client(base_url=server.url, timeout=timeout, transport=transport)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        fields: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """The answer when its status is in `ok` and its JSON has `fields`; else a ClientError."""
        where = f"{self.server.url} ({self.server.source})"
        try:
            response = self._http.request(
                method, path, headers={**self.auth, **(headers or {})}, **kwargs
            )
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach {where}: is `roleferry serve` running there? ({exc})"
            ) from exc
        if response.status_code in ok:
            missing = _missing_fields(response, fields)
            if not missing:
                return response
            raise ClientError(
                f"{where} answered {method} {path} without {', '.join(missing)}: is that "
                "address another service, or a roleferry of another version?"
            )
        error = _error_of(response)
        if error is None:
            raise ClientError(
                f"{where} answered {method} {path} with HTTP {response.status_code}, "
                "but not as roleferry does: is that address another service?"
            )
        if response.status_code == 401:
            raise ClientError(
                f"{self.server.url} refused the API key {self.key_source}: {error['message']}"
            )
        raise ClientError(error["message"], detail_lines(error.get("details")))


def _missing_fields(response: httpx.Response, fields: tuple[str, ...]) -> list[str]:
    if not fields:
        return []
    try:
        body = response.json()
    except ValueError:
        return list(fields)
    return [f for f in fields if not isinstance(body, dict) or f not in body]
