"""Per-show coalescing: concurrent requests for one show share one booking transaction.

One SERIALIZABLE transaction per request makes a hot show's buyers fight over its counter row and
spend their time in retries. Here, while a show's transaction runs, later requests for that show
wait in arrival order; the next transaction takes up to `batch_max` of them at once and answers
each on its own. A lone request starts at once, so coalescing adds no latency when it is quiet.
The database stays the source of truth: several processes coalescing on their own are still
correct, they merely contend with each other (and retry) like single requests would.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from service.domain import BatchDecision, BookingRequest, NotEnoughSeats

log = logging.getLogger(__name__)

BookBatch = Callable[[uuid.UUID, list[BookingRequest]], Awaitable[BatchDecision]]


@dataclass(slots=True)
class _Pending:
    request: BookingRequest
    answer: asyncio.Future[None]


@dataclass(slots=True)
class _ShowQueue:
    waiting: deque[_Pending] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class Booker(Protocol):
    async def book(self, request: BookingRequest) -> None: ...

    async def close(self) -> None: ...


class OneTransactionPerRequest:
    """Every request its own transaction: the contention baseline (BOOKING_COALESCING=false)."""

    def __init__(self, book_batch: BookBatch) -> None:
        self._book_batch = book_batch

    async def book(self, request: BookingRequest) -> None:
        decision = await self._book_batch(request.show_id, [request])
        if not decision.accepted:
            raise NotEnoughSeats()

    async def close(self) -> None:
        return None


class BookingCoalescer:
    def __init__(self, book_batch: BookBatch, batch_max: int) -> None:
        self._book_batch = book_batch
        self._batch_max = batch_max
        self._queues: dict[uuid.UUID, _ShowQueue] = {}

    async def book(self, request: BookingRequest) -> None:
        """Book one request; raises NotEnoughSeats, ShowNotFound or RetriesExhausted."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(request.show_id, _ShowQueue())
        queue.waiting.append(_Pending(request, answer))
        if queue.worker is None:
            queue.worker = asyncio.create_task(self._drain(request.show_id, queue))
        # The batch runs in the show's worker task: a client that goes away cancels only this
        # wait (and, if its request was not yet taken into a batch, the request itself).
        await answer

    async def _drain(self, show_id: uuid.UUID, queue: _ShowQueue) -> None:
        try:
            while queue.waiting:
                batch = self._take(queue)
                if batch:
                    await self._run(show_id, batch)
        finally:
            queue.worker = None
            if self._queues.get(show_id) is queue and not queue.waiting:
                del self._queues[show_id]

    def _take(self, queue: _ShowQueue) -> list[_Pending]:
        batch: list[_Pending] = []
        while queue.waiting and len(batch) < self._batch_max:
            pending = queue.waiting.popleft()
            # Nobody is waiting for an answer any more: don't book tickets no one will know of.
            if not pending.answer.cancelled():
                batch.append(pending)
        return batch

    async def _run(self, show_id: uuid.UUID, batch: list[_Pending]) -> None:
        try:
            decision = await self._book_batch(show_id, [p.request for p in batch])
        except Exception as error:  # the failure belongs to this batch only
            for pending in batch:
                _settle(pending.answer, error)
            return
        accepted = {r.booking_id for r in decision.accepted}
        for pending in batch:
            refused = pending.request.booking_id not in accepted
            _settle(pending.answer, NotEnoughSeats() if refused else None)

    async def close(self) -> None:
        workers = [q.worker for q in self._queues.values() if q.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)


def _settle(answer: asyncio.Future[None], error: BaseException | None) -> None:
    if answer.done():
        return
    if error is None:
        answer.set_result(None)
    else:
        answer.set_exception(error)
