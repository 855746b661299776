"""A TCP proxy in front of the real RabbitMQ or PostgreSQL that a test can cut, black-hole and heal.

It lets a test take a dependency away from one process without touching the shared services
that other test runs on this machine use (no `rabbitmqctl stop_app`, no PostgreSQL restart).

- `cut()`: every connection is reset, and new ones too (a crashed server, a killed connection).
- `blackhole()`: connections stay open and nothing passes, either way, not even a close: a dead
  network path (a pulled cable, a NAT that forgot the flow). New connections hang, or with
  `blackhole(new_connections="refuse")` are refused.
- `refuse()`: nothing listens any more (connection refused); existing connections are reset.
- `heal()`: forward again; connections that were black-holed stay dead (they are reset now).

`pg_proxy_to` gives a `PostgresProxy`, which also reads the PostgreSQL protocol: it can lose
the answer to a COMMIT, or let the path die right before one (see there), and counts what
passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from tests.support import pgwire


class Mode(Enum):
    UP = "up"  # forward both ways
    DOWN = "down"  # drop every connection, new ones too
    BLACKHOLE = "blackhole"  # keep connections open, forward nothing: a hung server, a dead path
    REFUSED = "refused"  # nothing listens: connection refused


NewConnections = Literal["hang", "refuse"]


@dataclass(eq=False)
class Link:
    """One client connection and its own connection to the server."""

    id: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None  # None while black-holed from the start
    dead: bool = False  # black-holed: stays silent until dropped, whatever the mode becomes
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def abort(self) -> None:
        self.dropped.set()
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()


class ToggleProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Future[asyncio.Server] | None = None
        self._listening = True  # what the mode wants; the server follows
        self._links: set[Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.mode = Mode.UP
        self.port = 0
        self.blackholed_at: float | None = None  # event loop time of the last blackhole()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, sock=self._listening_socket())

    async def close(self) -> None:
        self._drop_all()
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Connections end once dropped; wait for their handlers, so none is left to be
        # cancelled (and complain) when the event loop closes.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    def cut(self) -> None:
        self._listen_again()
        self.mode = Mode.DOWN
        self._drop_all()

    def blackhole(self, new_connections: NewConnections = "hang") -> None:
        self.blackholed_at = asyncio.get_running_loop().time()
        for link in self._links:
            link.dead = True
        if new_connections == "refuse":
            self._stop_listening()
        self.mode = Mode.BLACKHOLE

    def refuse(self) -> None:
        self._stop_listening()
        self.mode = Mode.REFUSED
        self._drop_all()

    def heal(self) -> None:
        # Connections black-holed so far stay dead; clients time out and reconnect.
        self._drop_all(only_dead=True)
        self._listen_again()
        self.mode = Mode.UP

    def reopen(self) -> None:
        """New connections go through again, and those black-holed stay hung, never closed: a
        client gets out only by noticing on its own (its timeouts), not by the proxy's help."""
        self._listen_again()
        self.mode = Mode.UP

    def _drop_all(self, only_dead: bool = False) -> None:
        for link in list(self._links):
            if link.dead or not only_dead:
                link.abort()
                self._links.discard(link)

    def _listening_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        return sock

    def _stop_listening(self) -> None:
        self._listening = False
        if self._server is not None:
            self._server.close()
            self._server = None

    def _listen_again(self) -> None:
        """Listen on the same port at once (the kernel queues connections from here on);
        asyncio starts accepting them as soon as the loop runs."""
        self._listening = True
        if self._server is None and self._starting is None:
            sock = self._listening_socket()
            self._starting = asyncio.ensure_future(asyncio.start_server(self._accept, sock=sock))
            self._starting.add_done_callback(self._serving)

    def _serving(self, starting: asyncio.Future[asyncio.Server]) -> None:
        self._starting = None
        if not starting.cancelled() and starting.exception() is None:
            self._server = starting.result()
            if not self._listening:  # refused again meanwhile
                self._stop_listening()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode in (Mode.DOWN, Mode.REFUSED):
            client_w.transport.abort()
            return
        link = Link(next(self._ids), client_w, dead=self.mode is Mode.BLACKHOLE)
        self._links.add(link)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        try:
            if link.dead:  # a new connection on a dead path: never answered
                await self._swallow(client_r)
                return
            try:
                server_r, link.server = await asyncio.open_connection(*self._upstream)
            except OSError:
                return
            await asyncio.gather(
                self._pipe(link, client_r, link.server, to_server=True),
                self._pipe(link, server_r, client_w, to_server=False),
                return_exceptions=True,
            )
        finally:
            self._links.discard(link)
            link.abort()
            self._forget(link)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    async def _pipe(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        to_server: bool,
    ) -> None:
        while data := await reader.read(65536):
            if link.dead or self.mode is not Mode.UP:
                continue  # swallowed, as a server that stopped answering or a dead path would
            data = self._inspect(link, data) if to_server else self._answer(link, data)
            if data:
                writer.write(data)
                await writer.drain()
        if link.dead:
            # A dead path does not carry a close either: the other end keeps waiting.
            await link.dropped.wait()
        link.abort()

    # Hooks for protocol-aware proxies: what reaches the other side.
    def _inspect(self, link: Link, data: bytes) -> bytes:
        return data

    def _answer(self, link: Link, data: bytes) -> bytes:
        return data

    def _forget(self, link: Link) -> None:
        """The link is gone: drop what the hooks kept about it."""


@dataclass
class Seen:
    """What passed a PostgresProxy, for a test to check."""

    connections: int = 0  # startup packets forwarded
    statements: list[str] = field(default_factory=list)  # SQL of every Query and Parse
    commits: int = 0  # COMMITs forwarded to the server (or held back by cut_before_commit)
    commits_cut: int = 0  # of those, the ones whose connection the proxy cut
    backend_pids: list[int] = field(default_factory=list)


@dataclass
class _CommitCut:
    remaining: int | None  # None: every COMMIT until disarmed
    before_server: bool
    application_name: str | None
    backend_pid: int | None
    dead_path: bool = False  # instead of cutting: the path dies, the COMMIT never arrives

    def takes(self, session: _Session) -> bool:
        if self.remaining == 0:
            return False
        if self.application_name not in (None, session.parameters.get("application_name")):
            return False
        if self.backend_pid not in (None, session.backend_pid):
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


@dataclass
class _Session:
    """One PostgreSQL connection as the proxy follows it."""

    client: pgwire.ClientConversation = field(default_factory=pgwire.ClientConversation)
    server: pgwire.Framer = field(default_factory=lambda: pgwire.Framer(startup=False))
    parameters: dict[str, str] = field(default_factory=dict)  # user, database, application_name
    backend_pid: int | None = None
    losing_answer: bool = False  # a COMMIT went through; its answer must not


class PostgresProxy(ToggleProxy):
    """A ToggleProxy that follows the PostgreSQL protocol and can lose a COMMIT's answer.

    It answers SSLRequest and GSSENCRequest itself with 'N' (no encryption), so the stream
    stays readable even in front of a server with ssl=on; clients with sslmode=require fail.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.seen = Seen()
        self._sessions: dict[int, _Session] = {}
        self._cut: _CommitCut | None = None

    def cut_after_commit(
        self,
        times: int | None = 1,
        *,
        application_name: str | None = None,
        backend_pid: int | None = None,
    ) -> None:
        """For the next `times` COMMITs (None: all) of matching connections: the server gets
        the COMMIT and commits, then the connection is cut before the answer reaches the
        client. The client sees its connection lost at COMMIT; the transaction is committed."""
        self._cut = _CommitCut(times, False, application_name, backend_pid)

    def cut_before_commit(
        self,
        times: int | None = 1,
        *,
        application_name: str | None = None,
        backend_pid: int | None = None,
    ) -> None:
        """The same failure as seen by the client, but the server never gets the COMMIT:
        the transaction is rolled back."""
        self._cut = _CommitCut(times, True, application_name, backend_pid)

    def blackhole_at_commit(
        self, *, application_name: str | None = None, backend_pid: int | None = None
    ) -> None:
        """At the next COMMIT of a matching connection the path dies (blackhole()): the
        COMMIT never reaches the server, which keeps the transaction open, its row locks held,
        as when a network fails under a client between its last statement and its COMMIT."""
        self._cut = _CommitCut(1, True, application_name, backend_pid, dead_path=True)

    def disarm(self) -> None:
        self._cut = None

    def _inspect(self, link: Link, data: bytes) -> bytes:
        session = self._sessions.setdefault(link.id, _Session())
        forward = []
        for message in session.client.feed(data):
            if message.kind in (pgwire.SSL, pgwire.GSSENC):
                link.client.write(b"N")
                continue
            self._note(session, message)
            if session.client.commits(message):
                self.seen.commits += 1
                if self._cut is not None and self._cut.takes(session):
                    self.seen.commits_cut += 1
                    if self._cut.dead_path:
                        self.blackhole()
                        return b""
                    if self._cut.before_server:
                        link.abort()
                        return b""
                    session.losing_answer = True
            forward.append(message.raw)
        return b"".join(forward)

    def _note(self, session: _Session, message: pgwire.Message) -> None:
        if message.kind == pgwire.STARTUP:
            session.parameters = pgwire.startup_parameters(message)
            self.seen.connections += 1
        sql = session.client.sql(message)
        if sql is not None:
            self.seen.statements.append(sql)

    def _answer(self, link: Link, data: bytes) -> bytes:
        session = self._sessions[link.id]
        forward = []
        for message in session.server.feed(data):
            answer = pgwire.read_answer(message)
            if answer.backend_pid is not None:
                session.backend_pid = answer.backend_pid
                self.seen.backend_pids.append(answer.backend_pid)
            if session.losing_answer and answer.ends_command:
                link.abort()  # what went before (a notice, a notification) still arrives
                break
            forward.append(message.raw)
        return b"".join(forward)

    def _forget(self, link: Link) -> None:
        self._sessions.pop(link.id, None)


@contextlib.asynccontextmanager
async def proxy_to(host: str, port: int) -> AsyncIterator[ToggleProxy]:
    proxy = ToggleProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@contextlib.asynccontextmanager
async def pg_proxy_to(host: str, port: int) -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
