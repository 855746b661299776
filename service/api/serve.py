"""One API process: logging, tracing, then the app on its port until SIGTERM/SIGINT.

A module of its own (not service/__main__.py) so that API_WORKERS can start it in spawned
processes, which import their target by module name.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from service.api.app import create_app
from service.common.logs import configure_logging
from service.common.loop import new_event_loop, tune_gc
from service.common.tracing import configure_tracing
from service.settings import Settings

log = logging.getLogger("service")


def serve(settings: Settings, reuse_port: bool) -> None:
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("tickets-api", settings.otel_exporter_otlp_endpoint)
    tune_gc()
    loop = new_event_loop()
    stop_once_on_signals(loop)
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        reuse_port=reuse_port,
        access_log=None,
        print=lambda *_: log.info("api listening on %s:%d", settings.http_host, settings.http_port),
        loop=loop,
        handle_signals=False,
    )


def stop_once_on_signals(loop: asyncio.AbstractEventLoop) -> None:
    """SIGTERM or SIGINT stops the API gracefully (requests in flight are answered); another
    one meanwhile is noted, not acted on. aiohttp's own handlers stop again on the second, in
    the middle of the shutdown, with a traceback: and Ctrl-C under `make run` sends two (the
    terminal's SIGINT, then the Makefile's SIGTERM to each process)."""

    def again() -> None:
        log.info("already stopping")

    def stop() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, again)
        raise GracefulExit()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
