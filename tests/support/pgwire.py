"""Just enough of the PostgreSQL wire protocol (v3) for a proxy that injects faults.

The proxy needs to know when a client sends COMMIT, so that it can lose the server's answer,
and which backend a connection is (its pid, application_name), so that a test can aim at one.
Both directions are framed the same way once the startup packet has passed: a one-byte type
and an int32 length that counts itself but not the type. Before that, the client sends
untyped packets (int32 length, int32 code): SSLRequest, GSSENCRequest, CancelRequest or the
StartupMessage itself. https://www.postgresql.org/docs/15/protocol-message-formats.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# Kinds of the untyped packets of the startup phase (typed messages use their letter).
STARTUP = "StartupMessage"
SSL = "SSLRequest"
GSSENC = "GSSENCRequest"
CANCEL = "CancelRequest"
_UNTYPED = {SSL_REQUEST: SSL, GSSENC_REQUEST: GSSENC, CANCEL_REQUEST: CANCEL}

MAX_MESSAGE = 1 << 30  # PostgreSQL's own limit for a message is 1 GB
MAX_STARTUP = 10_000  # and for a startup packet, MAX_STARTUP_PACKET_LENGTH


class ProtocolError(Exception):
    """The bytes are not the PostgreSQL protocol as this parser knows it (TLS, garbage)."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # the type letter ('Q', 'P', ...) or one of the untyped startup kinds
    body: bytes  # without type and length
    raw: bytes  # the message as it travelled

    def cstrings(self, count: int, offset: int = 0) -> list[str]:
        """The first `count` NUL-terminated strings of the body, from `offset`."""
        found = []
        for _ in range(count):
            end = self.body.index(b"\0", offset)
            found.append(self.body[offset:end].decode("utf-8", "replace"))
            offset = end + 1
        return found


class Framer:
    """Cuts a byte stream (fed in chunks of any size) into whole messages."""

    def __init__(self, startup: bool) -> None:
        self._buffer = bytearray()
        self._startup = startup  # the client side begins with untyped packets

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        offset = 0
        while (message := self._next(offset)) is not None:
            messages.append(message)
            offset += len(message.raw)
        del self._buffer[:offset]
        return messages

    def _next(self, offset: int) -> Message | None:
        typed = 0 if self._startup else 1
        header = self._buffer[offset : offset + typed + 4]
        if len(header) < typed + 4:
            return None
        length = int.from_bytes(header[typed:], "big")
        if not 4 <= length <= (MAX_MESSAGE if typed else MAX_STARTUP):
            raise ProtocolError(f"message length {length} at offset {offset}")
        raw = bytes(self._buffer[offset : offset + typed + length])
        if len(raw) < typed + length:
            return None
        if typed:
            return Message(chr(raw[0]), raw[5:], raw)
        return self._untyped(raw)

    def _untyped(self, raw: bytes) -> Message:
        code = int.from_bytes(raw[4:8], "big") if len(raw) >= 8 else 0
        kind = _UNTYPED.get(code, STARTUP)
        if kind == STARTUP:
            if code >> 16 != 3:
                raise ProtocolError(f"not a v3 startup packet (code {code})")
            self._startup = False
        return Message(kind, raw[4:], raw)


def startup_parameters(message: Message) -> dict[str, str]:
    """user, database, application_name, ... of a StartupMessage."""
    fields = message.body[4:].split(b"\0")
    pairs = [f.decode("utf-8", "replace") for f in fields]
    return {pairs[i]: pairs[i + 1] for i in range(0, len(pairs) - 1, 2) if pairs[i]}


_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_COMMIT = re.compile(r"(COMMIT|END)(\s+(WORK|TRANSACTION))?(\s+AND\s+(NO\s+)?CHAIN)?", re.I)


def is_commit(sql: str) -> bool:
    """Whether `sql` (one statement or several) ends a transaction block by committing it."""
    statements = _COMMENTS.sub(" ", sql).split(";")
    return any(_COMMIT.fullmatch(s.strip()) for s in statements)


class ClientConversation:
    """What a client asks of the server: the SQL it sends and when a COMMIT is executed.

    A simple Query ('Q') runs its SQL at once. In the extended protocol, Parse ('P') only
    prepares a statement, Bind ('B') makes a portal of it and Execute ('E') runs that; so the
    COMMIT happens at the Execute of a portal bound to a COMMIT statement.
    """

    def __init__(self) -> None:
        self.framer = Framer(startup=True)
        self._statements: dict[str, str] = {}
        self._portals: dict[str, str] = {}

    def feed(self, data: bytes) -> list[Message]:
        return self.framer.feed(data)

    def sql(self, message: Message) -> str | None:
        """The SQL text a Query or Parse message carries; None for the others."""
        if message.kind == "Q":
            return message.cstrings(1)[0]
        if message.kind == "P":
            return message.cstrings(2)[1]
        return None

    def commits(self, message: Message) -> bool:
        """Track prepared statements and portals; True if `message` makes the server commit."""
        if message.kind == "Q":
            return is_commit(message.cstrings(1)[0])
        if message.kind == "P":
            name, sql = message.cstrings(2)
            self._statements[name] = sql
        elif message.kind == "B":
            portal, statement = message.cstrings(2)
            self._portals[portal] = self._statements.get(statement, "")
        elif message.kind == "E":
            return is_commit(self._portals.get(message.cstrings(1)[0], ""))
        return False


@dataclass(frozen=True, slots=True)
class Answer:
    """What one backend message means to the proxy."""

    backend_pid: int | None = None  # BackendKeyData
    ends_command: bool = False  # CommandComplete, ErrorResponse, ReadyForQuery, EmptyQuery
    tag: str | None = None  # CommandComplete's tag ("COMMIT", "INSERT 0 1")
    sqlstate: str | None = None  # ErrorResponse's code


def read_answer(message: Message) -> Answer:
    if message.kind == "K":
        return Answer(backend_pid=int.from_bytes(message.body[:4], "big"))
    if message.kind == "C":
        return Answer(ends_command=True, tag=message.cstrings(1)[0])
    if message.kind == "E":
        fields = dict(_error_fields(message.body))
        return Answer(ends_command=True, sqlstate=fields.get("C"))
    return Answer(ends_command=message.kind in "ZI")


def _error_fields(body: bytes) -> list[tuple[str, str]]:
    return [
        (field[:1].decode(), field[1:].decode("utf-8", "replace"))
        for field in body.split(b"\0")
        if field
    ]
