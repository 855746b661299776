"""The private PostgreSQL helper: a cluster of the test's own that it may restart, and what
asyncpg and SQLAlchemy see while it does (the shared server on 5432 is never touched)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.private_postgres import private_postgres

# What a restart may show a client: its session ended by the shutdown (57P01, or the closed
# connection when asyncpg had already read that), refused while down, 57P03 while starting.
RESTART_SQLSTATES = {"57P01", "57P03", "08003", None}


async def test_restart_ends_sessions_and_accepts_new_ones_soon_after() -> None:
    async with private_postgres() as pg:
        conn = await asyncpg.connect(pg.dsn)
        await conn.execute("CREATE TABLE t (id int)")
        started = time.monotonic()
        await pg.restart(mode="fast")
        assert time.monotonic() - started < 10
        with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
            await conn.execute("INSERT INTO t VALUES (1)")  # asyncpg already read the 57P01
        again = await asyncpg.connect(pg.dsn)
        assert await again.fetchval("SELECT count(*) FROM t") == 0
        await again.close()
        conn.terminate()


async def test_sqlalchemy_under_load_sees_only_outages_and_recovers() -> None:
    async with private_postgres() as pg:
        engine = create_async_engine(pg.url, pool_size=4, connect_args={"timeout": 2})
        errors: list[BaseException] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT pg_sleep(0.01)"))
                except (OSError, sqlalchemy.exc.DBAPIError) as error:
                    errors.append(error)
                    await asyncio.sleep(0.01)

        workers = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(0.3)
        await pg.restart(mode="fast")
        async with asyncio.timeout(10):  # the pool hands out working connections again
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        stop.set()
        await asyncio.gather(*workers)
        await engine.dispose()

    assert errors, "the restart went unnoticed: the test proves nothing"
    for error in errors:
        if isinstance(error, sqlalchemy.exc.DBAPIError):
            assert getattr(error.orig, "sqlstate", None) in RESTART_SQLSTATES, error
        else:
            assert isinstance(error, ConnectionError), error


async def test_cluster_is_removed_even_when_the_test_fails() -> None:
    directory: Path | None = None
    with pytest.raises(RuntimeError, match="test failed"):
        async with private_postgres() as pg:
            directory = pg.directory
            raise RuntimeError("test failed")
    assert directory is not None and not directory.exists()


async def test_stop_and_start() -> None:
    async with private_postgres() as pg:
        await pg.stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(pg.dsn)
        await pg.start()
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
