"""Console sessions: a cookie that names an API key and is signed with that key's stored hash.

Nothing is kept on the server, so every process of a deployment accepts the same cookie, and
revoking the key ends its sessions at once. The hash is a secret only the database holds (the
raw key is never stored), so the cookie cannot be forged without the database. The same
signature, over a different message, is the CSRF token every form carries."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from roleferry.api.deps import SessionDep
from roleferry.users.models import ApiKey, User

COOKIE = "rf_session"
LIFETIME_S = 12 * 3600


def _sign(key_hash: str, message: str) -> str:
    return hmac.new(key_hash.encode(), message.encode(), hashlib.sha256).hexdigest()


def cookie_value(key: ApiKey, now: float | None = None) -> str:
    expires = int((now or time.time()) + LIFETIME_S)
    payload = f"{key.id}.{expires}"
    return f"{payload}.{_sign(key.key_hash, payload)}"


@dataclass(frozen=True)
class ConsoleSession:
    user: User
    key_id: str
    csrf: str


class SignInRequired(Exception):
    """No valid session: pages answer with the sign-in page, fragments with 401."""


class AdminRequired(Exception):
    """A signed-in user who is not an admin asked for an admin page."""


class CsrfFailed(Exception):
    """A form came without this session's CSRF token."""


async def read_session(request: Request, session: SessionDep) -> ConsoleSession | None:
    raw = request.cookies.get(COOKIE, "")
    key_id, _, rest = raw.partition(".")
    expires, _, signature = rest.partition(".")
    if not (key_id and expires.isdigit() and signature) or int(expires) < time.time():
        return None
    key = await session.scalar(
        select(ApiKey)
        .options(joinedload(ApiKey.user))
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    )
    await session.commit()  # ends the read, as after API-key authentication (api/deps.py)
    if key is None or not hmac.compare_digest(
        signature, _sign(key.key_hash, f"{key_id}.{expires}")
    ):
        return None
    return ConsoleSession(key.user, key.id, _sign(key.key_hash, f"csrf.{key_id}.{expires}"))


OptionalSession = Annotated[ConsoleSession | None, Depends(read_session)]


async def require_session(console: OptionalSession) -> ConsoleSession:
    if console is None:
        raise SignInRequired
    return console


Console = Annotated[ConsoleSession, Depends(require_session)]


async def require_admin(console: Console) -> ConsoleSession:
    if not console.user.is_admin:
        raise AdminRequired
    return console


AdminConsole = Annotated[ConsoleSession, Depends(require_admin)]


async def check_csrf(request: Request, console: Console) -> ConsoleSession:
    """Every state-changing console request carries the token, as a form field or (htmx) the
    X-CSRF-Token header; SameSite=Lax is the second line, not the only one."""
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("multipart/form-data", "application/x-www-form-urlencoded")
    ):
        value = (await request.form()).get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, console.csrf):
        raise CsrfFailed
    return console


CsrfConsole = Annotated[ConsoleSession, Depends(check_csrf)]


def is_https(request: Request, public_url: str) -> bool:
    """Behind HTTPS (directly, or per the public URL a proxy terminates TLS for)."""
    return request.url.scheme == "https" or public_url.startswith("https://")
