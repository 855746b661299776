"""Engine, sessions, migrations, and the retry of transactions that lost a serialization race."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alembic import command
from service.common import timeouts
from service.db import bounds

log = logging.getLogger(__name__)
T = TypeVar("T")

# Serialization failure and deadlock: the transaction did nothing and may simply run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
ROOT = Path(__file__).resolve().parents[2]


# A row lock waited for at most this long by default (the API sets BOOKING_MAX_WAIT instead).
LOCK_WAIT = 5.0


def create_engine(
    database_url: str,
    pool_size: int = 10,
    lock_wait: float = LOCK_WAIT,
    application_name: str = "tickets",
) -> AsyncEngine:
    """A pooled engine whose every connection bounds its waits (service/db/bounds.py): a
    statement without an answer fails after lock_wait + 2 s, a row lock is waited for
    `lock_wait` seconds, a client gone mid-transaction frees its rows after 2 s. A pooled
    connection PostgreSQL has closed is not handed out (see _refuse_closed_connections)."""
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # Statement parameters hold customer e-mails (up to a whole batch of them): never put
        # them in an error message, which ends up in a log.
        hide_parameters=True,
        # Fail fast when PostgreSQL is away: a buyer waiting a minute is worse than a quick 503.
        pool_timeout=timeouts.POOL_CHECKOUT,
        connect_args=bounds.pooled(lock_wait).connect_args(application_name),
    )
    _refuse_closed_connections(engine)
    return engine


def asyncpg_dsn(database_url: str) -> str:
    """The same database as a plain asyncpg DSN, for code that needs the driver itself
    (LISTEN, session-level advisory locks) rather than a pooled SQLAlchemy connection."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def serializable_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    return async_sessionmaker(serializable, expire_on_commit=False)


def is_retryable(error: BaseException) -> bool:
    orig = getattr(error, "orig", None)
    return isinstance(error, DBAPIError) and getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES


class RetriesExhausted(Exception):
    def __init__(self, attempts: int) -> None:
        super().__init__(f"serialization retries exhausted after {attempts} attempts")
        self.attempts = attempts


async def retry_serializable(
    transaction: Callable[[], Awaitable[T]],
    max_attempts: int,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run `transaction` until it commits; a lost race (40001/40P01, also at COMMIT) runs it again.

    Full jitter keeps competing transactions from colliding again in lockstep.
    """
    for attempt in range(1, max_attempts + 1):
        try:
            return await transaction()
        except DBAPIError as error:
            if not is_retryable(error) or attempt == max_attempts:
                if is_retryable(error):
                    raise RetriesExhausted(attempt) from error
                raise
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
    raise AssertionError("unreachable")


async def create_database_if_missing(database_url: str) -> bool:
    """Create the database named in the URL; True if it had to be made."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database="postgres",
        timeout=timeouts.CONNECT,
    )
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        log.info("created database %s", name)
        return True
    finally:
        await conn.close()


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str) -> None:
    """Create the database if it is missing, then run Alembic to head (blocking; own event loop)."""
    asyncio.run(create_database_if_missing(database_url))
    command.upgrade(alembic_config(database_url), "head")


# lock_not_available: a statement waited for a row lock longer than lock_timeout;
# query_canceled: a statement ran longer than statement_timeout. Either way the database is
# too busy for this request now, and nothing was done: "busy", not a bug.
TOO_SLOW_SQLSTATES = frozenset({"55P03", "57014"})


def is_too_slow(error: BaseException) -> bool:
    """A lock wait or a statement ran out of its time (lock_timeout, statement_timeout)."""
    orig = getattr(error, "orig", None)
    return isinstance(error, DBAPIError) and getattr(orig, "sqlstate", None) in TOO_SLOW_SQLSTATES


def _refuse_closed_connections(engine: AsyncEngine) -> None:
    """A pre-ping without a round trip, on every engine create_engine makes.

    SQLAlchemy's pool_pre_ping costs three round trips per checkout with asyncpg (BEGIN, an
    empty query, ROLLBACK): a third of a booking transaction's, and in the consumers, whose
    batches are small while they keep up, 7.8 % of their CPU (py-spy, bench pipeline). When
    PostgreSQL ends a connection (restart, pg_terminate_backend), it tells the client, and
    asyncpg marks the connection closed as soon as the event loop reads that; the pool then
    hands out a fresh one instead. A connection that dies unannounced (a cut path) fails its
    transaction as an outage either way: a pre-ping would only have failed it sooner.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("PostgreSQL closed this pooled connection")
