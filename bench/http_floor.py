"""What aiohttp itself costs per answer on the machine at hand, with none of our code: a bare
aiohttp app on uvloop answering `POST /book-tickets` as wrk sends it (the body read and parsed
with orjson, 201 with a booking id), in a process of its own. The floor under the API's CPU per
answer, beside what hot-100's 4.5x pgbench would need from one core.

    HTTP_PORT=8099 uv run --frozen python -m bench.http_floor      # serve, as the API would

`make bench` runs it after the API scenarios (`measure`): warm-up and measured run as theirs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid

import orjson
import uvloop
from aiohttp import web

from bench import scenarios, service

CONNECTIONS = 100


async def book(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    body = orjson.dumps({"booking_id": str(uuid.uuid4())})
    return web.Response(status=201, body=body, content_type="application/json")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ready")


def app() -> web.Application:
    served = web.Application()
    served.router.add_post("/book-tickets", book)
    served.router.add_get("/ready", ready)
    return served


@dataclasses.dataclass(frozen=True)
class HttpFloor:
    rate: float  # answers per second
    cpu_us_per_request: float
    cpu_share: float  # of one core


def measure(options: scenarios.Options) -> HttpFloor:
    print("  http floor: bare aiohttp, 100 connections ...", file=sys.stderr)
    command = [sys.executable, "-m", "bench.http_floor"]
    with service.api(command, service.environment("")) as floor:
        got = scenarios.measure(options, floor, [str(uuid.uuid4())], CONNECTIONS)
    return HttpFloor(
        got.load.rate,
        1e6 * got.cpu_seconds / max(got.load.requests, 1),
        got.cpu_seconds / got.load.seconds,
    )


def main() -> None:
    port = int(os.environ["HTTP_PORT"])
    # Plain uvloop and CPython's collector: not service.common.loop, none of our code.
    loop = uvloop.new_event_loop()
    web.run_app(app(), host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
