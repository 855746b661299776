"""python -m consumers run NAME|all | dlq list|redrive NAME | reconcile — and the wiring of each.

Every resource a consumer uses (the engine, the HTTP session for the provider) is made and
closed here, in plain sight; the runner and the consumers only receive them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import dlq, show_sales, ticket_provider
from consumers.runner import Consumer, ConsumerRunner
from consumers.topology import Topology
from service.broker import BROKER_ERRORS
from service.db.engine import DATABASE_OUTAGES, create_engine
from service.logs import configure_logging
from service.settings import Settings, SettingsError

log = logging.getLogger("consumers")

NAMES = (show_sales.NAME, ticket_provider.NAME)
UNREACHABLE = (*BROKER_ERRORS, *DATABASE_OUTAGES)


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


@asynccontextmanager
async def consumer_runners(
    settings: Settings, names: Sequence[str]
) -> AsyncIterator[list[ConsumerRunner]]:
    """A runner per named consumer, sharing one engine and one HTTP session, closed on exit."""
    async with AsyncExitStack() as resources:
        engine = create_engine(settings.database_url, settings.db_pool_size)
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


async def run(settings: Settings, names: Sequence[str]) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("consumers starting: %s (exchange %r)", ", ".join(names), settings.events_exchange)
    async with consumer_runners(settings, names) as runners:
        await run_until(runners, stopping)
    log.info("consumers stopped")


def topology(settings: Settings, name: str) -> Topology:
    return Topology.of(settings.consumer_queue_prefix, name, settings.consumer_retry_delays_ms)


async def list_dead_letters(settings: Settings, name: str) -> None:
    queue = topology(settings, name)
    found = await dlq.list_dead_letters(settings.amqp_url, queue)
    for dead_letter in found:
        print(dead_letter)
    print(f"{len(found)} messages in {queue.dead_letter}")


async def redrive(settings: Settings, name: str) -> None:
    queue = topology(settings, name)
    moved = await dlq.redrive(settings.amqp_url, queue)
    print(f"sent {moved} messages from {queue.dead_letter} back to {queue.main}")


async def reconcile(settings: Settings) -> int:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        compared, found = await show_sales.reconcile(engine)
    finally:
        await engine.dispose()
    for difference in found:
        print(difference)
    if found:
        print(f"{len(found)} of {compared} shows differ between bookings and show_sales")
        return 1
    print(f"show_sales matches the bookings table ({compared} shows)")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumers")
    commands = parser.add_subparsers(dest="command", required=True)
    run_command = commands.add_parser("run", help="run one consumer, or all of them")
    run_command.add_argument("name", choices=[*NAMES, "all"])
    dlq_command = commands.add_parser("dlq", help="the dead-letter queue of a consumer")
    dlq_command.add_argument("action", choices=["list", "redrive"])
    dlq_command.add_argument("name", choices=NAMES)
    commands.add_parser("reconcile", help="compare show_sales with the bookings table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        if args.command == "run":
            asyncio.run(run(settings, selected(settings, args.name)))
        elif args.command == "dlq" and args.action == "list":
            asyncio.run(list_dead_letters(settings, args.name))
        elif args.command == "dlq":
            asyncio.run(redrive(settings, args.name))
        else:
            return asyncio.run(reconcile(settings))
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except UNREACHABLE as error:
        # The one-shot commands (dlq, reconcile) say what they could not reach, no traceback;
        # `run` never gets here, it waits for its dependencies instead.
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
