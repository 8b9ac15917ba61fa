"""Signed one-click unsubscribe tokens: the user and the address, HMAC-SHA256, so a link
cannot be forged for another address or user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from roleferry.config import Settings

KEY_FILE = "unsubscribe.key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Signer:
    key: bytes

    @classmethod
    def of(cls, settings: Settings) -> Signer:
        """The configured secret, else a key generated once and kept in the data dir."""
        if settings.unsubscribe_secret is not None:
            return cls(settings.unsubscribe_secret.get_secret_value().encode())
        path = Path(settings.data_dir) / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        return cls(path.read_text().strip().encode())

    def token(self, user_id: str, email: str) -> str:
        body = _b64(json.dumps([user_id, email], separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str) -> tuple[str, str] | None:
        body, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            user_id, email = json.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        return str(user_id), str(email)

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest()[:16])
