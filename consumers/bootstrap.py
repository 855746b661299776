"""The wiring of the consumers: which run, what each is built from, and running them.

Every resource a consumer uses (the engine, the HTTP session for the provider) is made and
closed here, in plain sight; the runner and the consumers only receive them. Used by
`python -m consumers`, the tests and the benchmarks alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import show_sales, ticket_provider
from consumers.consumer import Consumer
from consumers.runner import ConsumerRunner
from consumers.topology import Topology
from service.db.engine import create_engine
from service.settings import Settings, SettingsError

log = logging.getLogger(__name__)

NAMES = (show_sales.NAME, ticket_provider.NAME)


def selected(settings: Settings, name: str) -> list[str]:
    """The consumers `run NAME` runs; `all` leaves out the provider when it has no URL."""
    without_url = not settings.ticket_provider_url
    if name == ticket_provider.NAME and without_url:
        raise SettingsError("TICKET_PROVIDER_URL must be set to run ticket_provider")
    if name != "all":
        return [name]
    if without_url:
        log.info("ticket_provider skipped: TICKET_PROVIDER_URL is not set")
        return [n for n in NAMES if n != ticket_provider.NAME]
    return list(NAMES)


def build(
    name: str, settings: Settings, engine: AsyncEngine, http: aiohttp.ClientSession
) -> Consumer:
    if name == show_sales.NAME:
        return show_sales.ShowSales(engine)
    if name == ticket_provider.NAME:
        return ticket_provider.TicketProvider(
            engine, http, settings.ticket_provider_url, settings.ticket_provider_timeout
        )
    raise ValueError(f"no consumer named {name!r}")


def topology(settings: Settings, name: str) -> Topology:
    return Topology.of(
        settings.events_exchange,
        name,
        settings.consumer_retry_delays_ms,
        settings.consumer_delivery_limit,
    )


@asynccontextmanager
async def consumer_runners(
    settings: Settings, names: Sequence[str]
) -> AsyncIterator[list[ConsumerRunner]]:
    """A runner per named consumer, sharing one engine and one HTTP session, closed on exit."""
    async with AsyncExitStack() as resources:
        engine = create_engine(settings.database_url.get_secret_value(), settings.db_pool_size)
        resources.push_async_callback(engine.dispose)
        http = await resources.enter_async_context(aiohttp.ClientSession())
        yield [ConsumerRunner(settings, build(name, settings, engine, http)) for name in names]


async def run_until(runners: Sequence[ConsumerRunner], stopping: asyncio.Event) -> None:
    """Run every runner until `stopping` is set, then stop them all and wait for them."""
    async with asyncio.TaskGroup() as group:
        for runner in runners:
            group.create_task(runner.run(), name=f"consumer-{runner.name}")
        await stopping.wait()
        for runner in runners:
            runner.stop()
