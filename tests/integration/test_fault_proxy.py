"""The fault proxy in front of the real PostgreSQL: each mode, seen by asyncpg and SQLAlchemy.

These pin down what the proxy does (so tests built on it mean what they say) and what the
drivers see of each fault, which the service's outage classification relies on.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.database import asyncpg_dsn
from tests.support.proxy import Mode, PostgresProxy
from tests.support.waiting import until


@pytest.fixture
async def probe(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A scratch table of this test's own."""
    name = f"fault_probe_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE TABLE {name} (id uuid PRIMARY KEY)")
    yield name
    await db.execute(f"DROP TABLE {name}")


Connect = Callable[..., Awaitable[asyncpg.Connection]]


@pytest.fixture
async def connect(proxied_url: str) -> AsyncIterator[Connect]:
    """asyncpg connections through the proxy (server settings as keywords), all closed at the
    end however the test left them."""
    opened: list[asyncpg.Connection] = []

    async def open_one(**settings: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(asyncpg_dsn(proxied_url), timeout=5, server_settings=settings)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.terminate()


async def exists(db: asyncpg.Connection, probe: str, row: uuid.UUID) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {probe} WHERE id = $1", row))


async def test_asyncpg_commit_whose_answer_is_lost(
    proxy: PostgresProxy, connect: Connect, probe: str, db: asyncpg.Connection
) -> None:
    conn = await connect()
    row = uuid.uuid4()
    proxy.cut_after_commit()
    with pytest.raises(asyncpg.ConnectionDoesNotExistError) as lost:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {probe} VALUES ($1)", row)
    assert lost.value.sqlstate == "08003"
    assert conn.is_closed()
    assert await exists(db, probe, row), "the server committed; only the answer was lost"
    assert (proxy.seen.commits, proxy.seen.commits_cut) == (1, 1)
    assert proxy.seen.statements[-2:] == [f"INSERT INTO {probe} VALUES ($1)", "COMMIT;"]


async def test_extended_protocol_commit_is_seen_too(
    proxy: PostgresProxy, connect: Connect, probe: str, db: asyncpg.Connection
) -> None:
    conn = await connect()
    row = uuid.uuid4()
    await conn.execute("BEGIN")
    await conn.execute(f"INSERT INTO {probe} VALUES ($1)", row)
    proxy.cut_after_commit()
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await conn.fetch("COMMIT")  # Parse/Bind/Execute: the server commits at the Execute
    assert await exists(db, probe, row)


async def test_cut_before_commit_rolls_back(
    proxy: PostgresProxy, connect: Connect, probe: str, db: asyncpg.Connection
) -> None:
    conn = await connect()
    row = uuid.uuid4()
    proxy.cut_before_commit()
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {probe} VALUES ($1)", row)
    # The same error for the client, but the server saw the connection end mid-transaction.
    await until(lambda: _gone(db, probe, row))


async def _gone(db: asyncpg.Connection, probe: str, row: uuid.UUID) -> bool:
    idle = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'idle in transaction'"
    )
    return idle == 0 and not await exists(db, probe, row)


async def test_sqlalchemy_commit_whose_answer_is_lost(
    proxy: PostgresProxy, proxied_url: str, probe: str, db: asyncpg.Connection
) -> None:
    engine = create_async_engine(proxied_url, pool_size=1)
    try:
        row = uuid.uuid4()
        proxy.cut_after_commit()
        with pytest.raises(sqlalchemy.exc.DBAPIError) as lost:
            async with engine.begin() as conn:
                await conn.execute(text(f"INSERT INTO {probe} VALUES (:row)"), {"row": row})
        # Not an OperationalError or InterfaceError: the dialect wraps asyncpg's
        # ConnectionDoesNotExistError (a PostgresError of class 08) as plain DBAPIError.
        assert type(lost.value) is sqlalchemy.exc.DBAPIError
        assert lost.value.connection_invalidated
        assert getattr(lost.value.orig, "sqlstate", None) == "08003"
        assert await exists(db, probe, row)
        async with engine.connect() as conn:  # the pool replaced the invalidated connection
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_commit_cut_aims_at_one_connection(
    proxy: PostgresProxy, connect: Connect, probe: str, db: asyncpg.Connection
) -> None:
    spared = await connect(application_name="spared")
    aimed_at = await connect(application_name="aimed-at")
    rows = [uuid.uuid4() for _ in range(3)]
    proxy.cut_after_commit(times=None, backend_pid=aimed_at.get_server_pid())
    async with spared.transaction():
        await spared.execute(f"INSERT INTO {probe} VALUES ($1)", rows[0])
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        async with aimed_at.transaction():
            await aimed_at.execute(f"INSERT INTO {probe} VALUES ($1)", rows[1])
    proxy.cut_after_commit(application_name="spared")
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        async with spared.transaction():
            await spared.execute(f"INSERT INTO {probe} VALUES ($1)", rows[2])
    assert [await exists(db, probe, row) for row in rows] == [True, True, True]
    assert (proxy.seen.commits, proxy.seen.commits_cut) == (3, 2)
    await aimed_at.close()
    await spared.close()


async def test_blackhole_is_a_dead_path_both_ways(
    proxy: PostgresProxy, proxied_url: str, connect: Connect, db: asyncpg.Connection
) -> None:
    conn = await connect(application_name="on-dead-path")
    pid = conn.get_server_pid()
    proxy.blackhole()
    with pytest.raises(TimeoutError):
        await conn.fetchval("SELECT 1", timeout=0.3)
    # The server is not told of the client's trouble, nor the client of the server's end.
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.3)
    assert not conn.is_closed()
    with pytest.raises(TimeoutError):
        await asyncpg.connect(asyncpg_dsn(proxied_url), timeout=0.3)  # new ones hang
    proxy.heal()  # the dead connection is reset; new ones go through
    await until(_closed(conn))
    fresh = await connect()
    assert await fresh.fetchval("SELECT 1") == 1
    await fresh.close()


def _closed(conn: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(conn.is_closed())

    return check


async def test_refused_new_connections(proxy: PostgresProxy, connect: Connect) -> None:
    proxy.blackhole(new_connections="refuse")
    with pytest.raises(ConnectionRefusedError):
        await connect()
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        await connect()
    proxy.heal()
    conn = await connect()
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


async def test_cut_resets_connections_and_new_ones(proxy: PostgresProxy, connect: Connect) -> None:
    conn = await connect()
    proxy.cut()
    await until(_closed(conn))
    with pytest.raises((ConnectionError, asyncpg.ConnectionDoesNotExistError)):
        await connect()
    proxy.heal()
    conn = await connect()
    await conn.close()


async def test_dead_path_row_lock_freed_by_idle_in_transaction_session_timeout(
    proxy: PostgresProxy, connect: Connect, probe: str, db: asyncpg.Connection
) -> None:
    row = uuid.uuid4()
    await db.execute(f"INSERT INTO {probe} VALUES ($1)", row)
    conn = await connect(idle_in_transaction_session_timeout="1000")
    await conn.execute("BEGIN")
    await conn.execute(f"SELECT 1 FROM {probe} WHERE id = $1 FOR UPDATE", row)
    proxy.blackhole()  # the client vanishes mid-transaction, holding the row lock
    started = time.monotonic()
    async with db.transaction():
        await db.execute("SET LOCAL lock_timeout = '5s'")
        await db.execute(f"SELECT 1 FROM {probe} WHERE id = $1 FOR UPDATE", row)
    assert time.monotonic() - started < 2.5
    assert not conn.is_closed(), "the client was not told: only the server gave up"


async def test_dead_path_advisory_lock_freed_by_idle_session_timeout(
    proxy: PostgresProxy, connect: Connect, db: asyncpg.Connection
) -> None:
    key = uuid.uuid4().int >> 65
    conn = await connect(idle_session_timeout="1000")
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
    proxy.blackhole()  # a relay leader whose path went dead while it was idle
    started = time.monotonic()

    async def free() -> bool:
        if not await db.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return False
        await db.execute("SELECT pg_advisory_unlock($1)", key)
        return True

    await until(free, within=5)
    assert time.monotonic() - started < 2.5


async def test_a_path_that_dies_at_commit_leaves_the_transaction_open_on_the_server(
    proxy: PostgresProxy, connect: Connect, probe: str, db: asyncpg.Connection
) -> None:
    conn = await connect(application_name="dying", idle_in_transaction_session_timeout="1000")
    pid = conn.get_server_pid()
    row = uuid.uuid4()
    proxy.blackhole_at_commit(application_name="dying")
    await conn.execute("BEGIN")
    await conn.execute(f"INSERT INTO {probe} VALUES ($1)", row)
    with pytest.raises(TimeoutError):
        await conn.execute("COMMIT", timeout=0.5)
    assert proxy.mode is Mode.BLACKHOLE and proxy.seen.commits_cut == 1
    state = await db.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    assert state == "idle in transaction"  # its locks held, until the server gives up on it
    await until(lambda: _gone(db, probe, row), within=5)
