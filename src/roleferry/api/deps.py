"""Request dependencies: the runtime, a database session, and the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.api import limits
from roleferry.errors import Forbidden, Unauthorized
from roleferry.runtime import Runtime
from roleferry.users import service as users
from roleferry.users.models import User

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer rf_…`")


async def get_runtime(request: Request) -> Runtime:
    """Async on purpose: FastAPI runs a plain `def` dependency in its thread pool."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.db.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_current_user(
    session: SessionDep,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The key's user, within its request rate limit (429 past it)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    user = await users.authenticate(session, credentials.credentials, runtime.api_keys)
    # End the read: on SQLite a transaction that read and then writes fails at once ("database
    # is locked") if anyone committed in between, so the route's writes must start afresh.
    await session.commit()
    if user is None:
        raise Unauthorized("invalid or revoked API key")
    if runtime.providers is not None:
        await limits.check(runtime.providers.store, runtime.settings.user_rate_limit, user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("this route needs an admin API key")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
