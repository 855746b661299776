"""/metrics, /health and /ready: the API serves them among its routes; the relay and the
consumers, which serve no other HTTP, on a small server of their own (RELAY_HTTP_PORT,
CONSUMERS_HTTP_PORT; 0 turns it off).

/health answers 200 while the process runs; /ready 200 when the process can do its work (the
relay: connected to PostgreSQL and RabbitMQ, leading or standing by; the consumers: every one
consuming), else 503 — what an orchestrator's probes and an alert want to know.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.common.encoding import json_response
from service.common.metrics import exposition

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else why not


async def metrics(request: web.Request) -> web.Response:
    body, content_type = exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def health(request: web.Request) -> web.Response:
    # The pid tells API workers apart (API_WORKERS > 1: which process answered).
    return json_response({"status": "ok", "pid": os.getpid()})


def ready(check: ReadyCheck) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        problem = await check()
        if problem is not None:
            return json_response({"error": problem}, status=503)
        return json_response({"status": "ready"})

    return answer


class ProbeServer:
    """The three probes on `host:port`, for a process that serves no other HTTP."""

    def __init__(self, host: str, port: int, check: ReadyCheck) -> None:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", health)
        app.router.add_get("/ready", ready(check))
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port

    async def __aenter__(self) -> ProbeServer:
        if self._port:
            await self._runner.setup()
            await web.TCPSite(self._runner, self._host, self._port).start()
            log.info("probes on %s:%d: /metrics /health /ready", self._host, self._port)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()
