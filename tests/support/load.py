"""Steady booking traffic for fault tests: clients that book one ticket at a time, again and
again, on a set of shows, each answer recorded with when it was asked and how long it took."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from tests.support.api import booking_body

Post = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
PAUSE_AFTER_REFUSAL = 0.05  # a client told 503 waits a little before it asks again


@dataclass(frozen=True, slots=True)
class Answer:
    api: str
    asked_at: float  # event loop time
    took: float  # seconds
    status: int
    body: dict[str, Any]


def poster(http: aiohttp.ClientSession, base: str) -> Post:
    """POST /book-tickets to the API at `base`; a connection error counts as status 0."""

    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            async with http.post(f"{base}/book-tickets", json=body) as response:
                return response.status, await response.json()
        except aiohttp.ClientError as error:
            return 0, {"error": repr(error)}

    return post


class SteadyLoad:
    """`clients` clients per API, booking on `shows` until the block ends."""

    def __init__(self, apis: dict[str, Post], shows: list[str], clients: int) -> None:
        self._apis = apis
        self._shows = shows
        self._clients = clients
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.answers: list[Answer] = []

    async def __aenter__(self) -> SteadyLoad:
        for api, post in self._apis.items():
            for n in range(self._clients):
                self._tasks.append(asyncio.create_task(self._client(api, post, n)))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, api: str, post: Post, seed: int) -> None:
        draw = random.Random(seed)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            asked_at = loop.time()
            status, body = await post(booking_body(draw.choice(self._shows), 1))
            self.answers.append(Answer(api, asked_at, loop.time() - asked_at, status, body))
            if status != 201:
                await asyncio.sleep(PAUSE_AFTER_REFUSAL)

    def of(self, api: str, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        """The answers of `api` to requests asked between `since` and `until`."""
        return [a for a in self.answers if a.api == api and since <= a.asked_at < until]

    def statuses(self, answers: list[Answer] | None = None) -> Counter[int]:
        return Counter(a.status for a in (self.answers if answers is None else answers))

    def booked(self) -> set[str]:
        return {a.body["booking_id"] for a in self.answers if a.status == 201}
