"""A TCP proxy in front of the real RabbitMQ that a test can cut, black-hole and heal.

It lets a test take the broker away from one relay without touching the shared RabbitMQ that
other test runs on this machine use (no `rabbitmqctl stop_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from enum import Enum


class Mode(Enum):
    UP = "up"  # forward both ways
    DOWN = "down"  # drop every connection, new ones too
    BLACKHOLE = "blackhole"  # keep connections open, forward nothing: a hung broker


class ToggleProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.mode = Mode.UP
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.mode = Mode.DOWN
        self._drop_all()

    def blackhole(self) -> None:
        self.mode = Mode.BLACKHOLE

    def heal(self) -> None:
        # Connections black-holed so far stay dead; clients time out and reconnect.
        if self.mode is Mode.BLACKHOLE:
            self._drop_all()
        self.mode = Mode.UP

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode is Mode.DOWN:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.mode is Mode.UP:
                writer.write(data)
                await writer.drain()
            # Black-holed: swallowed, as a broker that stopped answering would.
        writer.transport.abort()


@contextlib.asynccontextmanager
async def proxy_to(host: str, port: int) -> AsyncIterator[ToggleProxy]:
    proxy = ToggleProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
