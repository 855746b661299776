"""Around the booking transaction: when the database goes away under it, find out what happened.

A connection that breaks (a restart, a cut, a dead path) may break before the COMMIT was sent,
or after, when PostgreSQL may have committed and only its answer was lost: the client cannot
tell which. Answering "not booked, please retry" then makes a client that retries book twice;
answering 500 hides a booking that exists. So `LostCommitRecovery` wraps the transaction
(whatever it writes) and, when it fails for an outage (service/common/outages.py):

1. looks the batch's booking ids up on a fresh connection, after a fence: `SELECT ... FOR
   SHARE` of the batch's shows waits for any transaction that still holds their rows (a COMMIT
   on its way, or a session whose client vanished, which idle_in_transaction_session_timeout
   ends within 2 s), so that what the lookup reads next (READ COMMITTED) is final;
2. found: the transaction committed. Its bookings are made (201), and it refused the rest of
   the batch (not enough seats, or no such show), as the lookup tells;
3. none found: nothing was booked, so the whole batch runs again in a new transaction, on a
   fresh connection (a pooled connection that a restart broke is not an answer), while time is
   left; then "database unavailable" (503, truthfully not booked). A failure before anything
   was sent (connection refused, the server starting up) needs no lookup: the batch is tried
   again for up to RECONNECT_WINDOW (a restart refuses connections for ~0.2 s), then 503;
4. the lookup cannot be made (the database stays away): OutcomeUnknown, a 503 that says the
   booking may exist and how to find out; never "retry".

Every step is bounded (service/common/timeouts.py): the transaction BOOKING_MAX_WAIT +
TRANSACTION_GRACE, the lookup LOST_COMMIT_LOOKUP, the whole of it BOOKING_MAX_WAIT +
ANSWER_GRACE.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common import timeouts
from service.common.outages import Backoff, is_database_outage, nothing_sent
from service.db import bounds
from service.domain import BatchDecision, BookingRequest, OutcomeUnknown

log = logging.getLogger(__name__)

BookRequests = Callable[[list[BookingRequest]], Awaitable[BatchDecision]]

# Waits for the rows of the batch's shows: FOR SHARE conflicts with the counter UPDATE of a
# booking transaction (FOR KEY SHARE would not). Its lock wait outlasts a vanished client's
# transaction (idle_in_transaction_session_timeout), so it ends with a definite answer.
FENCE_LOCK_TIMEOUT_MS = round((bounds.IDLE_IN_TRANSACTION + 0.5) * 1000)
FENCE = text(
    """
    SELECT show_id FROM shows WHERE show_id = ANY(CAST(:show_ids AS uuid[]))
    ORDER BY show_id FOR SHARE
    """
)
LOOKUP = text(
    "SELECT booking_id FROM bookings WHERE booking_id = ANY(CAST(:booking_ids AS uuid[]))"
)
RETRY_PAUSE = 0.1  # between lookups while the database restarts (it takes ~0.2 s)
RECONNECT_WINDOW = 1.0  # how long after it started a batch tries again on refused connections
SHORTEST_ATTEMPT = 0.5  # a transaction given less time than this is not worth starting


@dataclass(frozen=True, slots=True)
class Found:
    """What the lookup saw, once nothing of the batch was still in flight."""

    booking_ids: set[uuid.UUID]
    show_ids: set[uuid.UUID]


class LostCommitRecovery:
    """`book` (the booking transaction) made truthful when the database fails under it."""

    def __init__(
        self,
        book: BookRequests,
        sessions: async_sessionmaker[AsyncSession],
        max_wait: float,
    ) -> None:
        self._book = book
        self._sessions = sessions  # READ COMMITTED, for the lookup
        self._transaction_time = max_wait + timeouts.TRANSACTION_GRACE
        self._budget = max_wait + timeouts.ANSWER_GRACE

    async def __call__(self, requests: list[BookingRequest]) -> BatchDecision:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._budget
        refused = Backoff(cap=RECONNECT_WINDOW / 2)
        while True:
            left = min(self._transaction_time, deadline - loop.time())
            try:
                return await timeouts.within(left, self._book(requests))
            except Exception as error:
                if not is_database_outage(error):
                    raise
                failure = error
            if nothing_sent(failure):
                # Not booked, certainly. A restart refuses connections for ~0.2 s: worth a few
                # tries; a database that stays away is told at once (503), not after seconds.
                pause = refused.next_delay()
                if loop.time() + pause - started > RECONNECT_WINDOW:
                    raise failure
                await asyncio.sleep(pause)
                continue
            found = await self._look_up(requests, deadline)
            if found.booking_ids:
                return committed(requests, found)
            if deadline - loop.time() < SHORTEST_ATTEMPT:
                raise failure  # known not booked: 503 "database unavailable"
            log.info("booking transaction lost to %r, not committed: running it again", failure)

    async def _look_up(self, requests: list[BookingRequest], deadline: float) -> Found:
        """What the batch left in the database; OutcomeUnknown if that cannot be known in time."""
        loop = asyncio.get_running_loop()
        give_up = min(deadline, loop.time() + timeouts.LOST_COMMIT_LOOKUP)
        while True:
            try:
                return await timeouts.within(give_up - loop.time(), self._read(requests))
            except Exception as error:
                if not is_database_outage(error) or loop.time() + RETRY_PAUSE >= give_up:
                    ids = ", ".join(str(r.booking_id) for r in requests)
                    log.warning("booking outcome unknown (%r) for bookings %s", error, ids)
                    raise OutcomeUnknown() from error
            await asyncio.sleep(RETRY_PAUSE)

    async def _read(self, requests: list[BookingRequest]) -> Found:
        show_ids = sorted({r.show_id for r in requests})
        booking_ids = [r.booking_id for r in requests]
        async with self._sessions() as session, session.begin():
            await session.execute(text(f"SET LOCAL lock_timeout = {FENCE_LOCK_TIMEOUT_MS}"))
            shows = set((await session.scalars(FENCE, {"show_ids": show_ids})).all())
            found = await session.scalars(LOOKUP, {"booking_ids": booking_ids})
            return Found(set(found.all()), shows)


def committed(requests: list[BookingRequest], found: Found) -> BatchDecision:
    """The decision of a batch whose transaction committed: it booked what was found, and
    refused the rest (the capacity rule refuses a request of an existing show for want of
    seats; one of a show that does not exist is unknown)."""
    accepted = [r for r in requests if r.booking_id in found.booking_ids]
    rest = [r for r in requests if r.booking_id not in found.booking_ids]
    return BatchDecision(
        accepted=accepted,
        rejected=[r for r in rest if r.show_id in found.show_ids],
        unknown_show=[r for r in rest if r.show_id not in found.show_ids],
    )
