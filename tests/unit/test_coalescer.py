"""The coalescer's bounds and failure isolation, against a fake transaction the test steers."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.coalescer import BookingCoalescer, OneTransactionPerRequest
from service.domain import (
    BatchDecision,
    BookingRequest,
    Capacity,
    ContentionExhausted,
    NotEnoughSeats,
    OutcomeUnknown,
    PartlyDecided,
    Request,
    ShowNotFound,
    StoredAnswer,
    TooManyWaiting,
    decide_for_shows,
)

SHOW = uuid.UUID(int=0)
OTHER_LANE_SHOW = uuid.UUID(int=1)  # show id modulo 2 lanes: the other lane


class Boom(Exception):
    pass


class FakeTransactions:
    """Books against in-memory capacities. A batch holding a request in `held` waits until
    `gate` opens; a batch holding a request in `failing` fails as a whole."""

    def __init__(self, capacities: dict[uuid.UUID, Capacity]) -> None:
        self.capacities = capacities
        self.batches: list[list[Request]] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.held: set[uuid.UUID] = set()
        self.failing: set[uuid.UUID] = set()

    async def book(self, requests: list[Request]) -> BatchDecision:
        self.batches.append(requests)
        if any(r.booking_id in self.held for r in requests):
            self.started.set()
            await self.gate.wait()
        if any(r.booking_id in self.failing for r in requests):
            raise Boom()
        decision = decide_for_shows(self.capacities, requests)
        for show_id, tickets in decision.tickets_by_show().items():
            capacity = self.capacities[show_id]
            self.capacities[show_id] = Capacity(
                capacity.number_of_tickets, capacity.tickets_booked + tickets
            )
        return decision

    def sizes(self) -> list[list[int]]:
        return [
            [r.number_of_tickets for r in batch if isinstance(r, BookingRequest)]
            for batch in self.batches
        ]

    def booked(self, request: BookingRequest) -> bool:
        return any(request in batch for batch in self.batches)


def req(tickets: int, show_id: uuid.UUID = SHOW) -> BookingRequest:
    return BookingRequest(show_id, tickets, "fan@example.com", "unit")


# Every test here is bounded: a lost wake-up fails fast instead of hanging the run.
BOUND = 5.0


async def first_batch_blocked(
    coalescer: BookingCoalescer, fake: FakeTransactions, first: BookingRequest
) -> asyncio.Task[StoredAnswer | None]:
    """Start `first` and return once its batch is running and held at the closed gate."""
    fake.held.add(first.booking_id)
    task = asyncio.create_task(coalescer.book(first))
    await fake.started.wait()
    return task


async def queue(
    coalescer: BookingCoalescer, *requests: BookingRequest
) -> list[asyncio.Task[StoredAnswer | None]]:
    """Queue `requests` in this order, and return once all of them wait in the lane."""
    tasks = []
    for request in requests:
        before = coalescer.queued(request.show_id)
        tasks.append(asyncio.create_task(coalescer.book(request)))
        await asyncio.sleep(0)  # one step of the loop: the new task runs up to its wait
        assert coalescer.queued(request.show_id) == before + 1
    return tasks


async def test_requests_queued_behind_a_batch_are_booked_together_in_arrival_order() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(4, 0)})
        coalescer = BookingCoalescer(fake.book, batch_max=100, lanes=1, max_wait=5, max_queued=1000)
        first = await first_batch_blocked(coalescer, fake, req(1))
        five, one = await queue(coalescer, req(5), req(1))
        fake.gate.set()
        await first
        with pytest.raises(NotEnoughSeats):
            await five
        await one
        assert fake.sizes() == [[1], [5, 1]]


async def test_batch_size_is_bounded() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(fake.book, batch_max=2, lanes=1, max_wait=5, max_queued=1000)
        first = await first_batch_blocked(coalescer, fake, req(1))
        queued = await queue(coalescer, *(req(n) for n in (2, 3, 4, 5, 6)))
        fake.gate.set()
        await asyncio.gather(first, *queued)
        assert fake.sizes() == [[1], [2, 3], [4, 5], [6]]


async def test_waiting_is_bounded_and_a_request_that_waited_too_long_is_never_booked() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(
            fake.book, batch_max=100, lanes=1, max_wait=0.05, max_queued=1000
        )
        first = await first_batch_blocked(coalescer, fake, req(1))
        late = req(2)
        (waiting,) = await queue(coalescer, late)
        # Its turn does not come within max_wait: "busy", though the batch ahead still runs.
        with pytest.raises(ContentionExhausted):
            await waiting
        assert coalescer.queued(SHOW) == 0
        fake.gate.set()
        # The request in the running batch is past max_wait too, but its transaction decides.
        await first
        assert fake.sizes() == [[1]]
        assert not fake.booked(late)


async def test_a_failed_transaction_fails_only_its_own_batch() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0), OTHER_LANE_SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(fake.book, batch_max=100, lanes=2, max_wait=5, max_queued=1000)
        doomed = req(1)
        fake.failing.add(doomed.booking_id)
        first = await first_batch_blocked(coalescer, fake, doomed)
        behind = await queue(coalescer, req(2), req(3))
        other_lane = asyncio.create_task(coalescer.book(req(4, OTHER_LANE_SHOW)))
        # The other lane does not wait for the failing one.
        await other_lane
        fake.gate.set()
        with pytest.raises(Boom):
            await first
        await asyncio.gather(*behind)
        assert sorted(fake.sizes()) == [[1], [2, 3], [4]]


async def test_unknown_show_is_refused_alone() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(fake.book, batch_max=100, lanes=1, max_wait=5, max_queued=1000)
        first = await first_batch_blocked(coalescer, fake, req(1))
        nowhere, fine = await queue(coalescer, req(1, uuid.uuid4()), req(1))
        fake.gate.set()
        await first
        with pytest.raises(ShowNotFound):
            await nowhere
        await fine
        assert len(fake.batches[1]) == 2


async def test_caller_gone_before_its_batch_is_withdrawn_and_in_a_batch_is_booked() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(fake.book, batch_max=100, lanes=1, max_wait=5, max_queued=1000)
        in_batch = req(1)
        first = await first_batch_blocked(coalescer, fake, in_batch)
        gone_early, stays = req(2), req(3)
        gone_task, stays_task = await queue(coalescer, gone_early, stays)
        # Both callers go away (a cancelled handler): one mid-transaction, one still queued.
        first.cancel()
        gone_task.cancel()
        fake.gate.set()
        await stays_task
        for task in (first, gone_task):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert fake.sizes() == [[1], [3]]
        assert fake.capacities[SHOW].tickets_booked == 4
        await coalescer.close()


async def test_requests_past_max_queued_are_refused_at_once_and_never_booked() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(fake.book, batch_max=100, lanes=1, max_wait=5, max_queued=2)
        first = await first_batch_blocked(coalescer, fake, req(1))  # in a batch: not waiting
        waiting = await queue(coalescer, req(2), req(3))
        refused = req(4)
        with pytest.raises(TooManyWaiting):
            await coalescer.book(refused)
        fake.gate.set()
        await asyncio.gather(first, *waiting)
        assert fake.sizes() == [[1], [2, 3]]
        assert not fake.booked(refused)
        # The queue drained: room again.
        await coalescer.book(req(5))
        assert fake.sizes()[-1] == [5]


async def test_one_transaction_per_request_bounds_requests_in_flight() -> None:
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        booker = OneTransactionPerRequest(fake.book, max_queued=1)
        first = req(1)
        fake.held.add(first.booking_id)
        running = asyncio.create_task(booker.book(first))
        await fake.started.wait()
        with pytest.raises(TooManyWaiting):
            await booker.book(req(2))
        fake.gate.set()
        await running
        await booker.book(req(3))
        assert fake.sizes() == [[1], [3]]


async def test_a_batch_that_does_not_answer_in_time_leaves_its_requests_unknown_not_hanging() -> (
    None
):
    async with asyncio.timeout(BOUND):
        fake = FakeTransactions({SHOW: Capacity(100, 0)})
        coalescer = BookingCoalescer(
            fake.book, batch_max=100, lanes=1, max_wait=0.05, max_queued=1000, answer_grace=0.1
        )
        held = req(1)
        # Its transaction hangs (a database on a dead path): the request was in a batch, so it
        # may be booked; after max_wait and the grace it is told so, never "busy, retry".
        with pytest.raises(OutcomeUnknown):
            await (await first_batch_blocked(coalescer, fake, held))
        fake.gate.set()
        await coalescer.close()
        assert fake.booked(held)


async def test_a_partly_decided_batch_answers_each_request_on_its_own() -> None:
    async with asyncio.timeout(BOUND):
        made, rest = req(1), req(2)

        async def half_known(requests: list[Request]) -> BatchDecision:
            # A lost commit's booking was found; the rest of the batch could not be run again.
            raise PartlyDecided(BatchDecision([made], []), ConnectionRefusedError())

        coalescer = BookingCoalescer(
            half_known, batch_max=100, lanes=1, max_wait=5, max_queued=1000
        )
        booked, failed = await asyncio.gather(
            coalescer.book(made), coalescer.book(rest), return_exceptions=True
        )
        assert booked is None
        assert isinstance(failed, ConnectionRefusedError)
