"""Coalescing: concurrent booking requests share booking transactions.

One SERIALIZABLE transaction per request makes a hot show's buyers fight over its counter row and
spend their time in retries, and pays a transaction's fixed cost for every single ticket. Here,
requests queue in a lane; while a lane's transaction runs, later requests wait in arrival order,
and the next transaction takes up to `batch_max` of them at once and answers each on its own.
A lone request starts at once, so coalescing adds no latency when it is quiet.

Every show always uses the same lane (show id modulo the number of lanes), so a show's requests
are decided in arrival order and a show never has two transactions of one process in flight. A
lane carries many shows: on a hot show its batches are that show's buyers; spread over many
shows, one transaction books requests for several shows at once. Lanes run side by side.

Bounds: a batch takes at most `batch_max` requests; a request waits at most `max_wait` for its
turn, then is answered "busy" without having been booked; in a batch, it has its answer by
`max_wait` + `answer_grace` after it came (its transaction bounds its own time, see
service/db/lost_commit.py; past that the booking may exist: OutcomeUnknown); at most
`max_queued` requests wait at once in a process, and one more is refused at once
(TooManyWaiting) rather than held in memory without bound. A failed transaction fails only
its own batch.
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

from service.common import timeouts
from service.domain import (
    BatchDecision,
    BookingRequest,
    ContentionExhausted,
    NotEnoughSeats,
    OutcomeUnknown,
    ShowNotFound,
    TooManyWaiting,
)

log = logging.getLogger(__name__)

BookRequests = Callable[[list[BookingRequest]], Awaitable[BatchDecision]]


@dataclass(slots=True)
class _Pending:
    request: BookingRequest
    answer: asyncio.Future[None]
    # Taken into a batch: from then on its outcome is the batch's, whatever the caller does.
    in_batch: bool = False


@dataclass(slots=True)
class _Lane:
    waiting: deque[_Pending] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class Booker(Protocol):
    async def book(self, request: BookingRequest) -> None: ...

    async def close(self) -> None: ...


class OneTransactionPerRequest:
    """Every request its own transaction: the contention baseline (BOOKING_COALESCING=false).
    At most `max_queued` requests are in flight (waiting for a connection or in a transaction)."""

    def __init__(self, book_requests: BookRequests, max_queued: int) -> None:
        self._book_requests = book_requests
        self._max_queued = max_queued
        self._in_flight = 0

    async def book(self, request: BookingRequest) -> None:
        if self._in_flight >= self._max_queued:
            raise TooManyWaiting()
        self._in_flight += 1
        try:
            decision = await self._book_requests([request])
        finally:
            self._in_flight -= 1
        raise_outcome(request, decision)

    async def close(self) -> None:
        return None


class BookingCoalescer:
    def __init__(
        self,
        book_requests: BookRequests,
        batch_max: int,
        lanes: int,
        max_wait: float,
        max_queued: int,
        answer_grace: float = timeouts.ANSWER_GRACE,
    ) -> None:
        self._book_requests = book_requests
        self._batch_max = batch_max
        self._max_wait = max_wait
        self._answer_grace = answer_grace
        self._max_queued = max_queued
        self._lanes = [_Lane() for _ in range(lanes)]
        self._queued = 0  # entries in every lane's `waiting`, withdrawn ones until popped

    async def book(self, request: BookingRequest) -> None:
        """Book one request; raises NotEnoughSeats, ShowNotFound, ContentionExhausted,
        TooManyWaiting or RetriesExhausted."""
        if self._queued >= self._max_queued:
            raise TooManyWaiting()
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        lane = self._lane_of(request.show_id)
        lane.waiting.append(pending)
        self._queued += 1
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._drain(lane))
        try:
            # Shielded: the batch, not this caller, owns the answer once it is in a batch.
            async with asyncio.timeout(self._max_wait):
                await asyncio.shield(pending.answer)
        except TimeoutError:
            if pending.in_batch:
                # Too late to withdraw: its transaction runs, and its outcome is the answer.
                await self._outcome(pending)
                return
            pending.answer.cancel()  # never booked: the lane skips it
            raise ContentionExhausted() from None
        except asyncio.CancelledError:
            # The caller went away (e.g. the client disconnected). Not yet in a batch: withdraw
            # it, so no tickets are booked that nobody will hear of. In a batch: the batch
            # goes on for everyone, this booking included, all or nothing.
            if not pending.in_batch:
                pending.answer.cancel()
            raise

    async def _outcome(self, pending: _Pending) -> None:
        """The batch's answer, if it comes within the grace: a transaction bounds its own time,
        so this only ends a wait that was already long (in the queue, then in the batch)."""
        try:
            async with asyncio.timeout(self._answer_grace):
                await asyncio.shield(pending.answer)
        except TimeoutError:
            raise OutcomeUnknown() from None

    def queued(self, show_id: uuid.UUID) -> int:
        """Requests waiting in this show's lane, not yet in a batch (for tests and metrics)."""
        return sum(not p.answer.done() for p in self._lane_of(show_id).waiting)

    def _lane_of(self, show_id: uuid.UUID) -> _Lane:
        return self._lanes[show_id.int % len(self._lanes)]

    async def _drain(self, lane: _Lane) -> None:
        try:
            while lane.waiting:
                batch = self._take(lane)
                if batch:
                    await self._run(batch)
        finally:
            lane.worker = None
            # Only an unexpected error or cancellation ends the loop early: nobody must be left
            # waiting for a worker that is gone.
            while lane.waiting:
                _settle(self._pop(lane).answer, ContentionExhausted())

    def _take(self, lane: _Lane) -> list[_Pending]:
        batch: list[_Pending] = []
        while lane.waiting and len(batch) < self._batch_max:
            pending = self._pop(lane)
            # Withdrawn (caller gone or waited too long): don't book what no one will hear of.
            if not pending.answer.done():
                pending.in_batch = True
                batch.append(pending)
        return batch

    def _pop(self, lane: _Lane) -> _Pending:
        self._queued -= 1
        return lane.waiting.popleft()

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            decision = await self._book_requests([p.request for p in batch])
        except Exception as error:  # the failure belongs to this batch only
            for pending in batch:
                _settle(pending.answer, error)
            return
        except asyncio.CancelledError:  # shutting down: the outcome is unknown, not "busy"
            for pending in batch:
                pending.answer.cancel()
            raise
        outcomes = outcome_by_booking(decision)
        for pending in batch:
            _settle(pending.answer, outcomes.get(pending.request.booking_id, _UNDECIDED))

    async def close(self) -> None:
        workers = [lane.worker for lane in self._lanes if lane.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)


# A request the decision does not mention (a bug) must never read as booked.
_UNDECIDED = RuntimeError("the booking transaction returned no decision for this request")


def outcome_by_booking(decision: BatchDecision) -> dict[uuid.UUID, Exception | None]:
    """Each request's answer: None if booked, else the error its caller gets."""
    outcomes: dict[uuid.UUID, Exception | None] = {r.booking_id: None for r in decision.accepted}
    outcomes.update((r.booking_id, NotEnoughSeats()) for r in decision.rejected)
    outcomes.update((r.booking_id, ShowNotFound()) for r in decision.unknown_show)
    return outcomes


def raise_outcome(request: BookingRequest, decision: BatchDecision) -> None:
    outcome = outcome_by_booking(decision)[request.booking_id]
    if outcome is not None:
        raise outcome


def _settle(answer: asyncio.Future[None], error: BaseException | None) -> None:
    if answer.done():
        return
    if error is None:
        answer.set_result(None)
    else:
        answer.set_exception(error)
