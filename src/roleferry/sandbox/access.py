"""Who may use the sandbox's control plane (`/sandbox/_control`): it switches faults that this
server's own sandbox-mode traffic runs into, so it is not for anyone who can reach the port.

Local callers may use it without a key: the server listens on a loopback interface only, or
the caller connects from a loopback address; a request that came through a proxy (Forwarded,
X-Forwarded-For, X-Real-IP) is never local. Everyone else must send
`Authorization: Bearer <ROLEFERRY_SANDBOX_ADMIN_KEY>`; with no such key configured, the control
plane answers local callers only.
"""

from __future__ import annotations

import hmac
import ipaddress

import structlog
from fastapi import Request

from roleferry.errors import Forbidden, Unauthorized

log = structlog.get_logger(__name__)
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_loopback(host: str) -> bool:
    """True for a loopback address or `localhost`; false for wildcards and everything else."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ControlAccess:
    def __init__(self, listen_host: str = "127.0.0.1", admin_key: str | None = None) -> None:
        self.listen_host = listen_host
        self.loopback_only = is_loopback(listen_host)
        self.admin_key = admin_key or None

    def _local(self, request: Request) -> bool:
        if any(name in request.headers for name in PROXY_HEADERS):
            return False
        client = request.client.host if request.client else ""
        return self.loopback_only or is_loopback(client)

    def check(self, request: Request) -> None:
        """Raises 401/403 in the API's error shape unless the caller may use the control plane."""
        if self._local(request):
            return
        if self.admin_key is None:
            raise Forbidden(
                "the sandbox control plane answers only local callers; to use it from elsewhere "
                "set ROLEFERRY_SANDBOX_ADMIN_KEY on the server and send "
                "`Authorization: Bearer <that key>`"
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.admin_key.encode()
        ):
            raise Unauthorized(
                "the sandbox control plane needs `Authorization: Bearer "
                "<ROLEFERRY_SANDBOX_ADMIN_KEY>` from callers that are not local"
            )

    def warn_if_exposed(self) -> None:
        """Says at start-up, loudly, when the sandbox is reachable beyond this machine."""
        if self.loopback_only:
            return
        log.warning(
            "sandbox_exposed",
            listen_host=self.listen_host,
            control_plane="admin key required from other hosts"
            if self.admin_key
            else "local callers only (set ROLEFERRY_SANDBOX_ADMIN_KEY to open it to others)",
            simulators="reachable by anyone who reaches this port, with the public test keys",
        )
