"""Around the booking transaction: when the database goes away under it, find out what happened.

A connection that breaks (a restart, a cut, a dead path) may break before the COMMIT was sent,
or after, when PostgreSQL may have committed and only its answer was lost: the client cannot
tell which. Answering "not booked, please retry" then makes a client that retries book twice;
answering 500 hides a booking that exists. So `LostCommitRecovery` wraps the transaction
(whatever it writes: bookings, cancellations, idempotency keys) and, when it fails for an outage
(service/common/outages.py):

1. looks the batch's new booking ids up on a fresh connection, after a fence: `SELECT ... FOR
   SHARE` of the batch's shows waits for any transaction that still holds their rows (a COMMIT
   on its way, or a session whose client vanished, which idle_in_transaction_session_timeout
   ends within 2 s), so that what the lookup reads next (READ COMMITTED) is final;
2. a booking found was made (201). Everything else in the batch runs again in a new
   transaction, on a fresh connection, which is safe whatever the lost one did: a booking not
   found was not made (refused, if the transaction committed: it is decided again); a
   cancellation done before is found done (200, the same body); a keyed request finds its
   stored answer. A pooled connection that a restart broke is not an answer;
3. all of it while time is left; then "database unavailable" (503) for what is known not done.
   A failure before anything was sent (connection refused, the server starting up) needs no
   lookup: the batch is tried again for up to RECONNECT_WINDOW (a restart refuses connections
   for ~0.2 s), then 503;
4. the lookup cannot be made (the database stays away): OutcomeUnknown, a 503 that says the
   request may have been done and how to find out; never "retry".

Every step is bounded (service/common/timeouts.py): the transaction BOOKING_MAX_WAIT +
TRANSACTION_GRACE, the lookup LOST_COMMIT_LOOKUP, the whole of it BOOKING_MAX_WAIT +
ANSWER_GRACE.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common import timeouts
from service.common.outages import Backoff, is_database_outage, nothing_sent
from service.db import bounds
from service.domain import BatchDecision, BookingRequest, OutcomeUnknown, PartlyDecided, Request

log = logging.getLogger(__name__)

BookRequests = Callable[[list[Request]], Awaitable[BatchDecision]]

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

    async def __call__(self, requests: list[Request]) -> BatchDecision:
        """The batch's decision; PartlyDecided when a lost commit's bookings were found and
        the rest of the batch could not be decided after."""
        made: list[BookingRequest] = []  # found made by a transaction whose answer was lost
        try:
            return with_made(made, await self._until_decided(requests, made))
        except Exception as error:
            if made:
                raise PartlyDecided(with_made(made, None), error) from error
            raise

    async def _until_decided(
        self, requests: list[Request], made: list[BookingRequest]
    ) -> BatchDecision | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._budget
        refused = Backoff(cap=RECONNECT_WINDOW / 2)
        pending = requests
        while True:
            left = min(self._transaction_time, deadline - loop.time())
            try:
                return await timeouts.within(left, self._book(pending))
            except Exception as error:
                if not is_database_outage(error):
                    raise
                failure = error
            if nothing_sent(failure):
                # Not done, certainly. A restart refuses connections for ~0.2 s: worth a few
                # tries; a database that stays away is told at once (503), not after seconds.
                pause = refused.next_delay()
                if loop.time() + pause - started > RECONNECT_WINDOW:
                    raise failure
                await asyncio.sleep(pause)
                continue
            found = await self._look_up(pending, deadline)
            made += [r for r in pending if isinstance(r, BookingRequest) and r.booking_id in found]
            pending = [r for r in pending if r.request_id not in {m.request_id for m in made}]
            if not pending:
                return None
            if deadline - loop.time() < SHORTEST_ATTEMPT:
                raise failure  # the rest known not done: 503 "database unavailable"
            log.info("booking transaction lost to %r: running the rest again", failure)

    async def _look_up(self, requests: list[Request], deadline: float) -> set[uuid.UUID]:
        """The batch's new bookings that exist; OutcomeUnknown if that cannot be known in time."""
        loop = asyncio.get_running_loop()
        give_up = min(deadline, loop.time() + timeouts.LOST_COMMIT_LOOKUP)
        while True:
            try:
                return await timeouts.within(give_up - loop.time(), self._read(requests))
            except Exception as error:
                if not is_database_outage(error) or loop.time() + RETRY_PAUSE >= give_up:
                    ids = ", ".join(str(r.booking_id) for r in requests)
                    log.warning("outcome unknown (%r) for bookings %s", error, ids)
                    raise OutcomeUnknown() from error
            await asyncio.sleep(RETRY_PAUSE)

    async def _read(self, requests: list[Request]) -> set[uuid.UUID]:
        show_ids = sorted({r.show_id for r in requests})
        booking_ids = [r.booking_id for r in requests if is_new_booking(r)]
        # Read only: the session ends with a rollback (no COMMIT that could be lost in turn),
        # which releases the fence's row locks.
        async with self._sessions() as session:
            await session.execute(text(f"SET LOCAL lock_timeout = {FENCE_LOCK_TIMEOUT_MS}"))
            await session.execute(FENCE, {"show_ids": show_ids})
            found = await session.scalars(LOOKUP, {"booking_ids": booking_ids})
            return set(found.all())


def is_new_booking(request: Request) -> bool:
    """A request whose booking id is its own: found in the table, it was made."""
    return isinstance(request, BookingRequest)


def with_made(made: list[BookingRequest], decision: BatchDecision | None) -> BatchDecision:
    """`decision` of the rest of a batch, with the bookings found made added to it."""
    if decision is None:
        return BatchDecision(accepted=list(made), rejected=[])
    return replace(decision, accepted=[*made, *decision.accepted]) if made else decision
