"""The outbox relay: committed outbox rows → RabbitMQ, confirmed, in per-show commit order.

- One relay leads, through a session advisory lock on its database connection; any others wait
  as hot standbys and take over within a poll interval of the leader's session ending (crash,
  SIGKILL, killed connection). So two relays never publish the same row in normal operation,
  and a show's events leave in one process, in id order, which is that show's commit order.
- The leader is woken by LISTEN/NOTIFY when a booking commits and polls as a fallback, reads a
  batch of unpublished rows, publishes them all at once (many in flight, publisher confirms) and
  marks as published only the confirmed prefix. A crash between confirm and mark republishes
  with the same message_id: delivery is at least once, consumers deduplicate.
- When PostgreSQL or RabbitMQ goes away it backs off (capped, jittered), logs once per state
  change, and reconnects; the API keeps taking bookings and the backlog drains afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from typing import TypeVar

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange

from service.broker import BROKER_ERRORS, close_quietly, connect, declare_events_exchange
from service.db.engine import asyncpg_dsn
from service.db.outbox import (
    NOTIFY_CHANNEL,
    OutboxRow,
    fetch_unpublished,
    mark_published,
    purge_published,
    try_lead,
)
from service.outages import Backoff, OutageLog, Unavailable, run_until_stopped, sleep_unless
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

PURGE_BATCH = 1_000
CLOSE_TIMEOUT_SECONDS = 2.0  # for the database connection
# What a lost database looks like; anything else is a bug, logged with its traceback.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def message_for(row: OutboxRow) -> aio_pika.Message:
    """The AMQP message of the event contract (DESIGN.md): message_id is the dedupe key."""
    return aio_pika.Message(
        body=row.payload.encode(),
        message_id=str(row.event_id),
        correlation_id=row.correlation_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=row.routing_key,
        timestamp=row.created_at,
    )


def confirmed_prefix(rows: Sequence[OutboxRow], errors: Sequence[BaseException | None]) -> int:
    """How many rows, from the first, RabbitMQ confirmed without a gap.

    Only these are marked: the rows from the first failure on are sent again in order, so the
    last copy of each event a consumer sees is still in commit order.
    """
    for index, error in enumerate(errors):
        if error is not None:
            return index
    return len(rows)


class _InFlight:
    """A batch handed to the broker whose confirms are still to come."""

    def __init__(
        self, rows: list[OutboxRow], publishing: Coroutine[None, None, list[BaseException | None]]
    ) -> None:
        self.rows = rows
        self.outcome = asyncio.ensure_future(publishing)

    async def abandon(self) -> None:
        """Left behind by a failure: stop waiting (its rows stay unmarked and are sent again)."""
        self.outcome.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.outcome


class OutboxRelay:
    def __init__(self, settings: Settings, application_name: str = "tickets-relay") -> None:
        self._settings = settings
        self._dsn = asyncpg_dsn(settings.database_url)
        self._application_name = application_name
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._outages = OutageLog(log, "relay", "relaying")
        self._role = ""
        self.published = 0  # events confirmed by RabbitMQ, for tests and benchmarks
        self.leading = False

    def stop(self) -> None:
        """Finish the batch in flight, then return from run()."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        purger = asyncio.create_task(self._purge_forever())
        try:
            await self._relay_forever()
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger

    async def _relay_forever(self) -> None:
        await run_until_stopped(
            self._lead_and_relay, self._stopping, self._outages, self._settings.relay_max_backoff
        )

    async def _lead_and_relay(self, backoff: Backoff) -> None:
        # The broker first: a relay that cannot reach RabbitMQ does not hold the lead, so a
        # standby that can reach it takes over.
        async with self._events_exchange() as exchange, self._database() as conn:
            backoff.reset()
            self._outages.recovered()
            if not await self._wait_for_lead(conn):
                return
            self.leading = True
            try:
                await _db(conn.add_listener(NOTIFY_CHANNEL, self._on_notify))
                while not self._stopping.is_set():
                    if await self._relay_until_empty(conn, exchange) == 0:
                        await sleep_unless(self._wake, self._settings.relay_poll_interval)
            finally:
                self.leading = False

    async def _wait_for_lead(self, conn: asyncpg.Connection) -> bool:
        while not self._stopping.is_set():
            if await _db(try_lead(conn)):
                self._announce("leading: this relay publishes the outbox")
                return True
            self._announce("standby: another relay leads; taking over when its session ends")
            await sleep_unless(self._stopping, self._settings.relay_poll_interval)
        return False

    def _announce(self, role: str) -> None:
        if role != self._role:
            log.info(role)
            self._role = role

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _relay_until_empty(self, conn: asyncpg.Connection, exchange: AbstractExchange) -> int:
        """Publish batches back to back until none is left; returns how many rows it marked.

        Two batches overlap: while one waits for its confirms, the one before is marked and
        the one after is read, so the database round trips hide behind the broker's.
        """
        self._wake.clear()  # a NOTIFY from here on means: look again
        size = self._settings.relay_batch_size
        marked = 0
        pending: deque[_InFlight] = deque()
        try:
            while True:
                in_flight = [row.id for batch in pending for row in batch.rows]
                stopping = self._stopping.is_set()  # then only settle what is in flight
                rows = [] if stopping else await _db(fetch_unpublished(conn, size, in_flight))
                if rows:
                    pending.append(_InFlight(rows, self._publish(exchange, rows)))
                if not pending:
                    return marked
                if len(pending) == 2 or not rows:
                    marked += await self._settle(conn, pending.popleft())
        finally:
            for batch in pending:
                await batch.abandon()

    async def _settle(self, conn: asyncpg.Connection, batch: _InFlight) -> int:
        """Wait for a batch's confirms and mark its confirmed prefix as published."""
        errors = await batch.outcome
        confirmed = confirmed_prefix(batch.rows, errors)
        if confirmed:
            # Fails if our session (and with it the lead) is gone; the rows are then sent
            # again by whoever leads next, with the same message_ids.
            await _db(mark_published(conn, [row.id for row in batch.rows[:confirmed]]))
            self.published += confirmed
        if confirmed < len(batch.rows):
            failure = next(e for e in errors if e is not None)
            raise Unavailable("RabbitMQ", failure)
        return confirmed

    async def _publish(
        self, exchange: AbstractExchange, rows: Sequence[OutboxRow]
    ) -> list[BaseException | None]:
        """Publish every row at once and wait for all confirms (each bounded by the timeout).

        The channel writes frames in call order under a FIFO lock, so the broker receives the
        batch in id order; RabbitMQ keeps that order into each queue.
        """
        timeout = self._settings.relay_publish_timeout
        outcomes = await asyncio.gather(
            *(
                exchange.publish(
                    message_for(row), row.routing_key, mandatory=False, timeout=timeout
                )
                for row in rows
            ),
            return_exceptions=True,
        )
        return [o if isinstance(o, BaseException) else None for o in outcomes]

    @contextlib.asynccontextmanager
    async def _database(
        self, application_name: str | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        conn = await _db(
            asyncpg.connect(
                self._dsn,
                timeout=5,
                server_settings={"application_name": application_name or self._application_name},
            )
        )
        try:
            yield conn
        finally:
            # Closing ends the session, which releases the lead for a standby.
            with contextlib.suppress(*DATABASE_ERRORS):
                await conn.close(timeout=CLOSE_TIMEOUT_SECONDS)
            if not conn.is_closed():
                conn.terminate()

    @contextlib.asynccontextmanager
    async def _events_exchange(self) -> AsyncIterator[AbstractExchange]:
        try:
            connection = await connect(self._settings.amqp_url, self._application_name)
        except BROKER_ERRORS as error:
            raise Unavailable("RabbitMQ", error) from error
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await declare_events_exchange(channel, self._settings.events_exchange)
        except BROKER_ERRORS as error:
            await close_quietly(connection)
            raise Unavailable("RabbitMQ", error) from error
        try:
            yield exchange
        finally:
            await close_quietly(connection)

    async def _purge_forever(self) -> None:
        interval = self._settings.outbox_purge_interval
        while not self._stopping.is_set():
            await sleep_unless(self._stopping, interval)
            try:
                purged = await self._purge()
            except Unavailable as error:
                log.warning("outbox purge failed, trying again in %.0f s: %s", interval, error)
                continue
            if purged:
                log.info("purged %d published outbox rows", purged)

    async def _purge(self) -> int:
        total = 0
        async with self._database("tickets-purge") as conn:
            while not self._stopping.is_set():
                retention = self._settings.outbox_retention
                purged = await _db(purge_published(conn, retention, PURGE_BATCH))
                total += purged
                if purged < PURGE_BATCH:
                    break
                await asyncio.sleep(0.01)  # let other work in between
        return total


async def _db(operation: Awaitable[T]) -> T:
    """Run a database step; a lost or unreachable PostgreSQL becomes Unavailable."""
    try:
        return await operation
    except DATABASE_ERRORS as error:
        raise Unavailable("PostgreSQL", error) from error
