"""python -m service migrate | api | relay | outbox-status | settings | asyncapi: wiring."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from functools import partial

from service import asyncapi
from service.api.serve import serve
from service.api.workers import run_workers
from service.common import metrics
from service.common.dependencies import dependencies_of
from service.common.logs import configure_logging
from service.common.loop import run as run_on_uvloop
from service.common.probes import ProbeServer
from service.common.tracing import configure_tracing
from service.db.engine import migrate
from service.db.outbox import OutboxStatus, dedicated_connection, outbox_status
from service.relay import OutboxRelay
from service.settings import Settings, SettingsError, settings_table

log = logging.getLogger("service")
COMMANDS = ("migrate", "api", "relay", "outbox-status")
# Generated documents: the README's table of variables, docs/asyncapi.yaml.
DOCUMENTS = {"settings": lambda: settings_table() + "\n", "asyncapi": asyncapi.render}


def run_api(settings: Settings) -> None:
    if settings.api_workers == 1:
        serve(settings, reuse_port=False)
        return
    # Several processes on one port; the kernel spreads connections over them. Each has its own
    # pool and coalescer: the database, not a process, decides what is booked.
    with tempfile.TemporaryDirectory(prefix="tickets-metrics-") as metrics_dir:
        # Before the workers start: each then keeps its metrics in files there, and a scrape
        # of any worker reports all of them (service/common/metrics.py).
        os.environ[metrics.MULTIPROCESS_DIR] = metrics_dir
        status = run_workers(partial(serve, settings, True), settings.api_workers)
    if status != 0:
        sys.exit(status)


async def run_relay(settings: Settings) -> None:
    configure_tracing("tickets-relay", settings.otel_exporter_otlp_endpoint)
    relay = OutboxRelay(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, relay.stop)

    async def connected() -> str | None:
        return None if relay.connected else "not connected to PostgreSQL and RabbitMQ"

    log.info("relay starting: outbox -> exchange %r", settings.events_exchange)
    async with ProbeServer(settings.http_host, settings.relay_http_port, connected):
        await relay.run()
    log.info("relay stopped after publishing %d events", relay.published)


async def print_outbox_status(settings: Settings) -> None:
    database_url = settings.database_url.get_secret_value()
    async with dedicated_connection(database_url, "tickets-outbox-status") as conn:
        status = await outbox_status(conn)
    print(describe_status(status))


def describe_status(status: OutboxStatus) -> str:
    age = status.oldest_unpublished_age
    return "\n".join(
        [
            f"backlog (unpublished rows):     {status.backlog}",
            f"oldest unpublished row age:     {'-' if age is None else f'{age:.3f} s'}",
            f"published in the last minute:   {status.published_last_minute}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service")
    parser.add_argument("command", choices=[*COMMANDS, *DOCUMENTS])
    args = parser.parse_args(argv)
    if args.command in DOCUMENTS:
        print(DOCUMENTS[args.command](), end="")
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        run_command(args.command, settings)
    except Exception as error:
        # A dependency missing or refusing us is one line saying what to do, not a traceback.
        line = dependencies_of(settings).explain(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    return 0


def run_command(command: str, settings: Settings) -> None:
    if command == "migrate":
        migrate(settings.database_url.get_secret_value())
        log.info("database migrated to head")
    elif command == "api":
        run_api(settings)
    elif command == "relay":
        run_on_uvloop(run_relay(settings))
    elif command == "outbox-status":
        asyncio.run(print_outbox_status(settings))


if __name__ == "__main__":
    sys.exit(main())
