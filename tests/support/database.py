"""A throwaway PostgreSQL database per test run, migrated to head with the real migrations."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from service.db.engine import asyncpg_dsn, migrate

__all__ = ["asyncpg_dsn", "create_migrated_database", "drop_database", "new_database_url"]

ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def new_database_url(prefix: str = "tickets_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def create_migrated_database(prefix: str = "tickets_test") -> str:
    url = new_database_url(prefix)
    # Alembic's env.py runs its own event loop: keep it off ours.
    await asyncio.to_thread(migrate, url)
    return url


async def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database="postgres"
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await conn.close()
