"""Fixtures: each test run gets its own database and its own exchange/queue names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.api import create_app
from service.common.tracing import configure_tracing
from service.db.engine import create_engine, serializable_sessions
from service.settings import Settings
from tests.support.broker import delete_run_objects
from tests.support.database import asyncpg_dsn, create_migrated_database, drop_database

RUN_ID = uuid.uuid4().hex[:10]
# Tests run traced, as the processes do (no exporter: ids and context only).
configure_tracing("tickets-tests", otlp_endpoint="")


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    url = await create_migrated_database()
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
async def settings(database_url: str) -> AsyncIterator[Settings]:
    settings = Settings.from_env({}).replaced(
        database_url=database_url,
        events_exchange=f"events_test_{RUN_ID}",
        http_port=0,
        relay_http_port=0,
        consumers_http_port=0,
    )
    yield settings
    # Consumer tests add their queues and exchanges here; the run leaves nothing behind on the
    # broker.
    amqp_url = settings.amqp_url.get_secret_value()
    for exchange in [settings.events_exchange, *RUN_EXCHANGES]:
        await delete_run_objects(amqp_url, exchange, [])
    await delete_run_objects(amqp_url, settings.events_exchange, RUN_QUEUES)


# Durable queues a test run declared (beyond the exchange's own), and the events exchanges of
# tests that have one of their own (queue names start with it): deleted at the end of the run.
RUN_QUEUES: list[str] = []
RUN_EXCHANGES: list[str] = []


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The booking transaction's sessions (SERIALIZABLE) on the run's database."""
    engine = create_engine(database_url, pool_size=2)
    yield serializable_sessions(engine)
    await engine.dispose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for checking invariants straight in the tables."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    yield conn
    await conn.close()
