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
from service.common.dependencies import POSTGRESQL, RABBITMQ, dependencies_of
from service.common.logs import configure_logging
from service.common.loop import run as run_on_uvloop
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
        names = selected(settings, args.name) if args.command == "run" else []
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    try:
        # The long-running consumers on uvloop (service/common/loop.py); the one-shots as ever.
        loop_run = run_on_uvloop if args.command == "run" else asyncio.run
        return loop_run(command(args, settings, names))
    except Exception as error:
        # What could not be reached (or is not set up), and what to do: one line, no
        # traceback. `run` waits for dependencies that are away, so it only gets here for
        # what no waiting fixes (a queue declared with other arguments).
        talking_to = RABBITMQ if args.command == "dlq" else POSTGRESQL
        line = dependencies_of(settings).explain(error, talking_to)
        if line is None and isinstance(error, dlq.NoSuchQueue):
            line = str(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


async def command(args: argparse.Namespace, settings: Settings, names: list[str]) -> int:
    if args.command == "run":
        await run(settings, names)
    elif args.command == "dlq" and args.action == "list":
        await list_dead_letters(settings, args.name)
    elif args.command == "dlq":
        await redrive(settings, args.name)
    else:
        return await reconcile(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
