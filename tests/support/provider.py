"""A fake external ticket provider (Dead Nation style) on a local port, with faults on demand.

    POST   /ticket/booking               books a ticket for the body's booking_id
    DELETE /ticket/booking/{booking_id}  takes that ticket back: 200, or 404 if there is none

It answers each Idempotency-Key once, as a strict real one would: a POST repeated with the same
key books nothing (even if its ticket was deleted since); a DELETE repeated with the same key
gets the first answer again, 404 included, and deletes nothing. It records every call and the
tickets that are live, so tests can check what reached it and what is left.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
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
    method: str = "POST"
    booking_id: str = ""


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
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # booking id -> its ticket
    deletes: dict[str, int] = field(default_factory=dict)  # DELETE key -> its first answer
    # Runs when a POST arrives, before it books: a test can make things happen meanwhile.
    before_booking: Callable[[str], Awaitable[None]] | None = None
    url: str = ""

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def handle(self, request: web.Request) -> web.Response:
        self.received += 1
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        status = await self._answer(key, body)
        traceparent = request.headers.get("traceparent")
        booking_id = str(body.get("booking_id"))
        self.calls.append(Call(key, body, status, traceparent, "POST", booking_id))
        return web.json_response({"ticket_id": key} if status < 300 else {}, status=status)

    async def handle_delete(self, request: web.Request) -> web.Response:
        self.received += 1
        booking_id = request.match_info["booking_id"]
        key = request.headers.get("Idempotency-Key")
        status = self._delete(key, booking_id)
        traceparent = request.headers.get("traceparent")
        self.calls.append(Call(key, {}, status, traceparent, "DELETE", booking_id))
        return web.json_response({}, status=status)

    def _delete(self, key: str | None, booking_id: str) -> int:
        if key is None or booking_id in self.refusing:
            return 400
        if booking_id in self.failing or self._random.random() < self.failure_rate:
            return 500
        if key not in self.deletes:
            self.deletes[key] = 404 if self.live.pop(booking_id, None) is None else 200
        return self.deletes[key]

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
        if not repeat and self.before_booking is not None:
            await self.before_booking(booking_id)
        if not repeat:
            self.booked[key] = body
            self.bookings_made[key] = self.bookings_made.get(key, 0) + 1
            self.live[booking_id] = body
        if roll < self.failure_rate + self.hang_rate:
            await asyncio.sleep(self.hang_seconds)  # booked, but the answer comes too late
        return 200 if repeat else 201

    def calls_for(self, booking_id: str) -> list[Call]:
        return [c for c in self.calls if c.booking_id == booking_id]


@asynccontextmanager
async def serving(provider: FakeProvider) -> AsyncIterator[FakeProvider]:
    app = web.Application()
    app.router.add_post("/ticket/booking", provider.handle)
    app.router.add_delete("/ticket/booking/{booking_id}", provider.handle_delete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    provider.url = str(server.make_url(""))
    try:
        yield provider
    finally:
        await server.close()
