"""Creating users, issuing and checking API keys. Every query that reads a key is scoped
to its owner, so one user can never see or revoke another's."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, make_transient_to_detached

from roleferry.errors import Conflict, NotFound
from roleferry.users.keycache import KeyCache
from roleferry.users.models import ApiKey, User, utcnow

KEY_PREFIX = "rf_"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A key as created: the raw value exists only here, once."""

    record: ApiKey
    raw: str


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


@dataclass(frozen=True)
class NewUser:
    user: User
    key: IssuedKey


async def create_user(session: AsyncSession, email: str, *, is_admin: bool = False) -> NewUser:
    user = User(email=email.strip().lower(), is_admin=is_admin)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"a user with email {user.email} already exists") from exc
    issued = await issue_key(session, user, name="default")
    await session.commit()
    return NewUser(user=user, key=issued)


async def issue_key(session: AsyncSession, user: User, *, name: str) -> IssuedKey:
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(user_id=user.id, name=name, prefix=raw[:10], key_hash=hash_key(raw))
    session.add(record)
    await session.flush()
    return IssuedKey(record=record, raw=raw)


async def authenticate(
    session: AsyncSession, raw_key: str, cache: KeyCache | None = None
) -> User | None:
    """The key's user, unless the key is unknown or revoked. With `cache`, a key seen lately
    is answered without a query (its user attached to `session` as if loaded)."""
    key_hash = hash_key(raw_key)
    known = cache.get(key_hash) if cache is not None else None
    if known is not None:
        user = User(**known)
        make_transient_to_detached(user)
        session.add(user)
        return user
    generation = cache.generation if cache is not None else 0
    row = await session.scalar(
        select(ApiKey)
        .options(joinedload(ApiKey.user))
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    if row is None:
        return None
    if cache is not None:
        cache.put(key_hash, row.user, generation)
    return row.user


async def list_keys(session: AsyncSession, user: User) -> list[ApiKey]:
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)
    )
    return list(rows)


async def get_key(session: AsyncSession, user: User, key_id: str) -> ApiKey:
    row = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id))
    if row is None:
        raise NotFound(f"no API key {key_id}")
    return row


async def revoke_key(session: AsyncSession, user: User, key_id: str) -> ApiKey:
    """In the caller's write session: it reads the key, then changes it."""
    row = await get_key(session, user, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row
