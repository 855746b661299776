"""A fake external ticket provider (Dead Nation style) on a local port, with faults on demand.

It books each Idempotency-Key once, as the real one promises; a repeat with the same key gets
the same answer and books nothing. It records every call so tests can check what reached it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass(frozen=True)
class Call:
    idempotency_key: str | None
    body: dict[str, Any]
    status: int
    traceparent: str | None = None


@dataclass
class FakeProvider:
    failure_rate: float = 0.0  # answer 500 without booking
    hang_rate: float = 0.0  # book, then answer only after `hang_seconds` (past the timeout)
    hang_seconds: float = 1.0
    seed: int = 5
    failing: set[str] = field(default_factory=set)  # booking ids answered 500, always
    refusing: set[str] = field(default_factory=set)  # booking ids answered 400
    calls: list[Call] = field(default_factory=list)  # answered calls
    received: int = 0  # calls that arrived, answered or not yet
    booked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> first body
    bookings_made: dict[str, int] = field(default_factory=dict)  # key -> tickets created
    url: str = ""

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def handle(self, request: web.Request) -> web.Response:
        self.received += 1
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        status = await self._answer(key, body)
        self.calls.append(Call(key, body, status, request.headers.get("traceparent")))
        return web.json_response({"ticket_id": key} if status < 300 else {}, status=status)

    async def _answer(self, key: str | None, body: dict[str, Any]) -> int:
        booking_id = str(body.get("booking_id"))
        if key is None:
            return 400
        if booking_id in self.refusing:
            return 400
        if booking_id in self.failing:
            return 500
        roll = self._random.random()
        if roll < self.failure_rate:
            return 500
        repeat = key in self.booked
        if not repeat:
            self.booked[key] = body
            self.bookings_made[key] = self.bookings_made.get(key, 0) + 1
        if roll < self.failure_rate + self.hang_rate:
            await asyncio.sleep(self.hang_seconds)  # booked, but the answer comes too late
        return 200 if repeat else 201

    def calls_for(self, booking_id: str) -> list[Call]:
        return [c for c in self.calls if c.body.get("booking_id") == booking_id]


@asynccontextmanager
async def serving(provider: FakeProvider) -> AsyncIterator[FakeProvider]:
    app = web.Application()
    app.router.add_post("/ticket/booking", provider.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    provider.url = str(server.make_url(""))
    try:
        yield provider
    finally:
        await server.close()
