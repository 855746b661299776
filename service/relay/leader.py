"""OutboxRelay: one relay leads and publishes; any others wait as hot standbys.

- The lead is a session advisory lock on the leader's database connection. Standbys try for it
  every poll interval and take over as soon as the leader's session ends (crash, SIGKILL, killed
  connection). So two relays never publish the same row in normal operation, and a show's events
  leave in one process, in id order, which is that show's commit order.
- The leader is woken by LISTEN/NOTIFY when a booking commits and polls as a fallback.
- When PostgreSQL or RabbitMQ goes away it backs off (capped, jittered), logs once per state
  change, and reconnects; the API keeps taking bookings and the backlog drains afterwards.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aio_pika.abc import AbstractExchange

from service.broker import confirmed_channel, declare_events_exchange
from service.common import metrics
from service.common.dependencies import dependencies_of
from service.common.outages import (
    RABBITMQ,
    Backoff,
    OutageLog,
    guarded,
    postgresql_on,
    run_until_stopped,
    sleep_unless,
)
from service.db.outbox import NOTIFY_CHANNEL, dedicated_connection, try_lead
from service.relay.backlog import OutboxBacklog
from service.relay.publisher import OutboxPublisher
from service.relay.purge import Purge, retentions
from service.settings import Settings

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, settings: Settings, application_name: str = "tickets-relay") -> None:
        self._settings = settings
        self._application_name = application_name
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._outages = OutageLog(log, "relay", "relaying", dependencies_of(settings).explain)
        self._role = ""
        self.published = 0  # events confirmed by RabbitMQ, for tests and benchmarks
        self.leading = False
        self.connected = False  # to PostgreSQL and RabbitMQ, leading or standing by

    def stop(self) -> None:
        """Finish the batch in flight, then return from run()."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Relay (leading or standing by), purge and measure the backlog, side by side, until
        stopped."""
        settings = self._settings
        database_url = settings.database_url.get_secret_value()
        purge = Purge(
            database_url,
            retentions(settings.outbox_retention, settings.idempotency_key_ttl),
            settings.outbox_purge_interval,
            self._stopping,
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(purge.run(), name="purge")
            tasks.create_task(OutboxBacklog(database_url, self._stopping).run(), name="backlog")
            await run_until_stopped(
                self._lead_and_relay, self._stopping, self._outages, settings.relay_max_backoff
            )

    async def _lead_and_relay(self, backoff: Backoff) -> None:
        # The broker first: a relay that cannot reach RabbitMQ does not hold the lead, so a
        # standby that can reach it takes over.
        settings = self._settings
        async with (
            confirmed_channel(settings.amqp_url.get_secret_value(), self._application_name) as ch,
            dedicated_connection(
                settings.database_url.get_secret_value(), self._application_name
            ) as conn,
        ):
            exchange = await guarded(
                RABBITMQ, declare_events_exchange(ch, settings.events_exchange)
            )
            backoff.reset()
            self._outages.recovered()
            self.connected = True
            try:
                await self._lead(conn, exchange)
            finally:
                self.connected = False

    async def _lead(self, conn: asyncpg.Connection, exchange: AbstractExchange) -> None:
        """Wait for the lead, then publish until stopped or a dependency is lost."""
        if not await self._wait_for_lead(conn):
            return
        settings = self._settings
        publisher = OutboxPublisher(
            conn,
            exchange,
            settings.relay_batch_size,
            settings.relay_publish_timeout,
            self._count_published,
        )
        self._set_leading(True)
        try:
            await self._relay(conn, publisher)
        finally:
            self._set_leading(False)

    async def _relay(self, conn: asyncpg.Connection, publisher: OutboxPublisher) -> None:
        await guarded(postgresql_on(conn), conn.add_listener(NOTIFY_CHANNEL, self._on_notify))
        while not self._stopping.is_set():
            self._wake.clear()  # a NOTIFY from here on means: look again
            if await publisher.until_empty(self._stopping) == 0:
                await sleep_unless(self._wake, self._settings.relay_poll_interval)

    async def _wait_for_lead(self, conn: asyncpg.Connection) -> bool:
        while not self._stopping.is_set():
            if await guarded(postgresql_on(conn), try_lead(conn)):
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

    def _count_published(self, count: int) -> None:
        self.published += count
        metrics.RELAY_PUBLISHED.inc(count)

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        metrics.RELAY_LEADER.set(1 if leading else 0)
