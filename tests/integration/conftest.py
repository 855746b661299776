"""Fixtures of the fault tests: the run's database behind a PostgreSQL-aware TCP proxy
(tests/support/proxy.py), and the API on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import make_url

from service.api import create_app
from service.settings import Settings
from tests.support.proxy import PostgresProxy, pg_proxy_to


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PostgresProxy]:
    url = make_url(database_url)
    async with pg_proxy_to(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_url(database_url: str, proxy: PostgresProxy) -> str:
    """The run's database, reached through the proxy (SQLAlchemy URL)."""
    return make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
async def proxied_client(
    settings: Settings, proxied_url: str
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The API with its database behind the proxy."""
    async with TestClient(
        TestServer(create_app(settings.replaced(database_url=proxied_url)))
    ) as client:
        yield client
