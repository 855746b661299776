"""Slow clients are bounded: a body that does not arrive in time gets 408 and the connection is
closed; a request head that trickles in, and an idle keep-alive connection, are closed.

Over raw sockets to the real server, with the bounds set to 1 s (the defaults, 10 s and 15 s,
are the same code with other numbers). Each wait is bounded well above the bound under test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.settings import Settings
from tests.support.api import Client, show_body

BOUND = 1.0
WITHIN = 10.0  # a generous ceiling on what must happen after BOUND


@pytest.fixture
async def quick(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings.replaced(http_body_timeout=BOUND, http_idle_timeout=BOUND))
    async with TestClient(TestServer(app)) as client:
        yield client


async def connect(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert client.server.port is not None
    return await asyncio.open_connection("127.0.0.1", client.server.port)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WITHIN):
        return await reader.read()  # everything the server sends, up to its close


def head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("path", ["/shows", "/book-tickets"])
async def test_a_body_that_does_not_arrive_gets_408_and_the_connection_closes(
    quick: Client, path: str
) -> None:
    reader, writer = await connect(quick)
    # Announces 100 bytes, sends 10, then nothing: the slow client.
    writer.write(head(path, 100) + b'{"show_id"')
    await writer.drain()
    answer = await read_until_closed(reader)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    assert b"Connection: close" in rest
    body = rest.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body) == {"error": f"the request body did not arrive within {BOUND:g} s"}


async def test_a_body_that_arrives_slowly_but_in_time_is_read(quick: Client) -> None:
    reader, writer = await connect(quick)
    body = json.dumps(show_body(2)).encode()
    writer.write(head("/shows", len(body)) + body[:10])
    await writer.drain()
    await asyncio.sleep(BOUND / 4)  # a pause shorter than the bound: the body still counts
    writer.write(body[10:])
    await writer.drain()
    async with asyncio.timeout(WITHIN):
        status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 201"), status_line


async def test_a_request_head_that_trickles_in_is_cut_off(quick: Client) -> None:
    reader, writer = await connect(quick)
    writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")  # and never the end
    await writer.drain()
    assert await read_until_closed(reader) == b""  # closed, without an answer
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(quick: Client) -> None:
    reader, writer = await connect(quick)
    writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    answer = await read_until_closed(reader)  # the answer, then the close once idle
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(answer.rsplit(b"\r\n", 1)[-1])["status"] == "ok"
