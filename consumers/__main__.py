"""python -m consumers run NAME|all | dlq list|redrive NAME | reconcile."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from consumers import dlq, show_sales
from consumers.bootstrap import NAMES, consumer_runners, run_until, selected, topology
from service.common.logs import configure_logging
from service.common.loop import run as run_on_uvloop
from service.common.outages import Unavailable, is_broker_outage, is_database_outage
from service.common.probes import ProbeServer
from service.common.tracing import configure_tracing
from service.db.engine import create_engine
from service.settings import Settings, SettingsError

log = logging.getLogger("consumers")


async def run(settings: Settings, names: Sequence[str]) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    configure_tracing("tickets-consumers", settings.otel_exporter_otlp_endpoint)
    log.info("consumers starting: %s (exchange %r)", ", ".join(names), settings.events_exchange)
    async with consumer_runners(settings, names) as runners:

        async def consuming() -> str | None:
            waiting = [runner.name for runner in runners if not runner.consuming.is_set()]
            return f"not consuming: {', '.join(waiting)}" if waiting else None

        port = settings.consumers_http_port
        async with ProbeServer(settings.http_host, port, consuming):
            await run_until(runners, stopping)
    log.info("consumers stopped")


async def list_dead_letters(settings: Settings, name: str) -> None:
    queue = topology(settings, name)
    found = await dlq.list_dead_letters(settings.amqp_url.get_secret_value(), queue)
    for dead_letter in found:
        print(dead_letter)
    print(f"{len(found)} messages in {queue.dead_letter}")


async def redrive(settings: Settings, name: str) -> None:
    queue = topology(settings, name)
    moved = await dlq.redrive(settings.amqp_url.get_secret_value(), queue)
    print(f"sent {moved} messages from {queue.dead_letter} back to {queue.main}")


async def reconcile(settings: Settings) -> int:
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
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
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "run":
            run_on_uvloop(run(settings, selected(settings, args.name)))
        elif args.command == "dlq" and args.action == "list":
            asyncio.run(list_dead_letters(settings, args.name))
        elif args.command == "dlq":
            asyncio.run(redrive(settings, args.name))
        else:
            return asyncio.run(reconcile(settings))
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # The one-shot commands (dlq, reconcile) say what they could not reach, no traceback;
        # `run` never gets here, it waits for its dependencies instead.
        unreachable = isinstance(error, Unavailable) or is_database_outage(error)
        if not (unreachable or is_broker_outage(error)):
            raise
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
