"""Coalescing: concurrent booking requests share booking transactions.

One SERIALIZABLE transaction per request makes a hot show's buyers fight over its counter row and
spend their time in retries, and pays a transaction's fixed cost for every single ticket. Here,
requests queue in a lane; while a lane's transaction runs, later requests wait in arrival order,
and the next transaction takes up to `batch_max` of them at once and answers each on its own.
A lone request starts at once, so coalescing adds no latency when it is quiet.

Cancellations take the same path as bookings: they change the same counter, so a cancellation
in a transaction of its own would fight the show's booking batch for its row (one of them failing
with 40001 and running again, a whole batch if it loses), while in the batch it costs nothing
extra; and the show's events, BookingMade and BookingCanceled, keep one commit order.

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
    Booking,
    BookingRequest,
    CancelRequest,
    ContentionExhausted,
    Outcome,
    OutcomeUnknown,
    PartlyDecided,
    Request,
    StoredAnswer,
    TooManyWaiting,
    outcomes,
)

log = logging.getLogger(__name__)

BookRequests = Callable[[list[Request]], Awaitable[BatchDecision]]
# What a request's caller gets back: None (booked), a stored answer (replayed for its
# Idempotency-Key), a booking (a cancellation's answer). Refusals are raised.
Settled = None | StoredAnswer | Booking


@dataclass(slots=True)
class _Pending:
    request: Request
    answer: asyncio.Future[Settled]
    # How long, past max_wait, its batch may take to answer it.
    grace: float = 0.0
    # Fires at max_wait: "busy" if the request still waits for its turn; in a batch, it gives
    # the batch `grace` more. Cancelled once the request is answered.
    deadline: asyncio.TimerHandle | None = None
    # Taken into a batch: from then on its outcome is the batch's, whatever the caller does.
    in_batch: bool = False

    def expire(self) -> None:
        """Waited too long for its turn: answered busy, never booked (the lane skips it)."""
        if not self.in_batch:
            _settle(self.answer, ContentionExhausted())
        elif not self.answer.done():
            self.deadline = asyncio.get_running_loop().call_later(self.grace, self.give_up)

    def give_up(self) -> None:
        """Its batch did not answer in time (a database on a dead path): booked or not is
        unknown, and the caller is told so rather than kept waiting."""
        _settle(self.answer, OutcomeUnknown())

    def answered(self, outcome: Outcome | BaseException) -> None:
        _settle(self.answer, outcome)
        if self.deadline is not None:
            self.deadline.cancel()


@dataclass(slots=True)
class _Lane:
    waiting: deque[_Pending] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    running: bool = False  # a batch of the lane is in its transaction


class Booker(Protocol):
    async def book(self, request: BookingRequest) -> StoredAnswer | None:
        """None: booked now; a stored answer: the one given before for its Idempotency-Key.
        Raises NotEnoughSeats, ShowNotFound, IdempotencyKeyReused, ContentionExhausted,
        TooManyWaiting or RetriesExhausted."""

    async def cancel(self, request: CancelRequest) -> Booking:
        """The booking, canceled (now or before). Raises BookingNotFound, ContentionExhausted,
        TooManyWaiting or RetriesExhausted."""

    async def close(self) -> None: ...


class OneTransactionPerRequest:
    """Every request its own transaction: the contention baseline (BOOKING_COALESCING=false).
    At most `max_queued` requests are in flight (waiting for a connection or in a transaction)."""

    def __init__(self, book_requests: BookRequests, max_queued: int) -> None:
        self._book_requests = book_requests
        self._max_queued = max_queued
        self._in_flight = 0

    async def book(self, request: BookingRequest) -> StoredAnswer | None:
        return _as_booked(await self._one(request))

    async def cancel(self, request: CancelRequest) -> Booking:
        return _as_canceled(await self._one(request))

    async def _one(self, request: Request) -> Settled:
        if self._in_flight >= self._max_queued:
            raise TooManyWaiting()
        self._in_flight += 1
        try:
            decision = await self._book_requests([request])
        finally:
            self._in_flight -= 1
        return settled(request, decision)

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

    async def book(self, request: BookingRequest) -> StoredAnswer | None:
        return _as_booked(await self._submit(request))

    async def cancel(self, request: CancelRequest) -> Booking:
        return _as_canceled(await self._submit(request))

    async def _submit(self, request: Request) -> Settled:
        """Queue one request in its show's lane and wait for its batch's answer; raises
        TooManyWaiting at once when the process holds as many as it may."""
        if self._queued >= self._max_queued:
            raise TooManyWaiting()
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), self._answer_grace)
        pending.deadline = loop.call_later(self._max_wait, pending.expire)
        lane = self._lane_of(request.show_id)
        lane.waiting.append(pending)
        self._queued += 1
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._drain(lane))
        # Not shielded: if the caller goes away (the client disconnected), its await cancels
        # the future. Not yet in a batch, the lane then skips it: no tickets are booked that
        # nobody will hear of. In a batch, the batch goes on for everyone, this booking
        # included, all or nothing; the cancelled future only stops its answer.
        # One future and one timer per request: the cheapest bounded wait asyncio has.
        return await pending.answer

    def queued(self, show_id: uuid.UUID) -> int:
        """Requests waiting in this show's lane, not yet in a batch (for tests and metrics)."""
        return sum(not p.answer.done() for p in self._lane_of(show_id).waiting)

    def running(self, show_id: uuid.UUID) -> bool:
        """Whether a batch of this show's lane is in its transaction (for tests)."""
        return self._lane_of(show_id).running

    def _lane_of(self, show_id: uuid.UUID) -> _Lane:
        return self._lanes[show_id.int % len(self._lanes)]

    async def _drain(self, lane: _Lane) -> None:
        try:
            while lane.waiting:
                batch = self._take(lane)
                if batch:
                    lane.running = True
                    await self._run(batch)
                    lane.running = False
        finally:
            lane.running = False
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
        rest: Exception = _UNDECIDED
        try:
            decision = await self._book_requests([p.request for p in batch])
        except PartlyDecided as partly:  # a lost commit found: those it booked are booked
            decision, rest = partly.decision, partly.error
        except Exception as error:  # the failure belongs to this batch only
            for pending in batch:
                pending.answered(error)
            return
        except asyncio.CancelledError:  # shutting down: the outcome is unknown, not "busy"
            for pending in batch:
                pending.answer.cancel()
            raise
        decided = outcomes(decision)
        for pending in batch:
            pending.answered(decided.get(pending.request.request_id, rest))

    async def close(self) -> None:
        workers = [lane.worker for lane in self._lanes if lane.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)


# A request the decision does not mention (a bug) must never read as booked.
_UNDECIDED = RuntimeError("the booking transaction returned no decision for this request")


def settled(request: Request, decision: BatchDecision) -> Settled:
    """What `request`'s caller gets from `decision`; a refusal is raised."""
    outcome = outcomes(decision).get(request.request_id, _UNDECIDED)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _as_booked(result: Settled) -> StoredAnswer | None:
    if isinstance(result, Booking):
        raise TypeError("a booking request was answered as a cancellation")
    return result


def _as_canceled(result: Settled) -> Booking:
    if not isinstance(result, Booking):
        raise TypeError("a cancellation was answered as a booking request")
    return result


def _settle(answer: asyncio.Future[Settled], outcome: Outcome | BaseException) -> None:
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
