"""A user's callback secret is made once, however many requests ask for it at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from roleferry.db import Database
from roleferry.notifications.callbacks import secret_for
from roleferry.notifications.models import CallbackSecret
from roleferry.runtime import Runtime
from roleferry.users import service
from tests.conftest import make_settings


@pytest.mark.postgres
def test_concurrent_first_requests_on_postgres_all_get_the_one_stored_secret(
    tmp_path: Path, postgres_url: str
) -> None:
    """Twenty sessions ask at once for a secret that does not exist yet: no IntegrityError,
    one row, and every caller holds the secret that row keeps (a get-then-insert raced)."""
    Runtime(make_settings(tmp_path, database_url=postgres_url)).migrate()

    async def run() -> tuple[set[str], int, str]:
        database = Database(postgres_url)
        try:
            async with database.write_session() as session:
                user_id = (await service.create_user(session, "race@example.com")).user.id
            start = asyncio.Event()

            async def ask() -> str:
                async with database.write_session() as session:
                    await start.wait()
                    return await secret_for(session, user_id)

            tasks = [asyncio.create_task(ask()) for _ in range(20)]
            await asyncio.sleep(0.2)
            start.set()
            got = set(await asyncio.gather(*tasks))
            async with database.session() as session:
                count = select(func.count()).select_from(CallbackSecret)
                rows = int(await session.scalar(count) or 0)
                stored = await session.scalar(select(CallbackSecret.secret))
            return got, rows, str(stored)
        finally:
            await database.dispose()

    got, rows, stored = asyncio.run(run())
    assert rows == 1
    assert got == {stored}
