"""With OTEL_EXPORTER_OTLP_ENDPOINT set, the API exports its spans over OTLP/HTTP; the request's
trace is in what the collector receives."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from service.settings import Settings
from tests.support.processes import environment, start, wait_until_ready
from tests.support.waiting import until

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
async def test_spans_are_exported_to_the_collector(settings: Settings, tmp_path: Path) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received.append(export)
        return web.Response(status=200)

    collector_app = web.Application()
    collector_app.router.add_post("/v1/traces", collect)
    async with TestServer(collector_app, host="127.0.0.1") as collector:
        port = free_port()
        env = environment(
            settings,
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
            OTEL_EXPORTER_OTLP_ENDPOINT=str(collector.make_url("")).rstrip("/"),
            OTEL_BSP_SCHEDULE_DELAY="100",  # ms: export soon, not after 5 s
        )
        api = await start("api-traced", ["service", "api"], env, tmp_path)
        try:
            async with asyncio.timeout(30):
                await wait_until_ready(f"http://127.0.0.1:{port}/ready", api)
                traceparent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
                # As a client that traces on its own would send it (sampled), not as this
                # process's instrumented client would.
                with suppress_http_instrumentation():
                    await get_traced(port, traceparent)

                async def exported() -> bool:
                    return TRACE_ID in trace_ids(received)

                await until(exported)
        finally:
            await api.stop()


async def get_traced(port: int, traceparent: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/shows/00000000-0000-0000-0000-000000000000",
            headers={"traceparent": traceparent},
        ) as response,
    ):
        assert response.status == 404


def trace_ids(exports: list[ExportTraceServiceRequest]) -> set[str]:
    return {
        span.trace_id.hex()
        for export in exports
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
