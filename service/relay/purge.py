"""The outbox purge: published rows older than their retention are deleted, beside the relay.

Any relay purges, leading or standby: the statements take different rows (SKIP LOCKED) and
bookings never wait for them. The purge never dies: a failed round is logged and the next one
comes after the interval, so a database outage or a bug costs one round, not the purge.
"""

from __future__ import annotations

import asyncio
import logging

from service.common.outages import Unavailable, guarded, postgresql_on, sleep_unless
from service.db.outbox import dedicated_connection, purge_published

log = logging.getLogger(__name__)

PURGE_BATCH = 1_000


class OutboxPurge:
    def __init__(
        self, database_url: str, retention: float, interval: float, stopping: asyncio.Event
    ) -> None:
        self._database_url = database_url
        self._retention = retention
        self._interval = interval
        self._stopping = stopping

    async def run(self) -> None:
        """Purge every interval until stopped."""
        while not self._stopping.is_set():
            await sleep_unless(self._stopping, self._interval)
            if self._stopping.is_set():
                return
            try:
                purged = await self.purge()
            except Unavailable as error:
                log.warning("outbox purge failed, next try in %.0f s: %s", self._interval, error)
                continue
            except Exception:
                log.exception(
                    "outbox purge failed unexpectedly, next try in %.0f s", self._interval
                )
                continue
            if purged:
                log.info("purged %d published outbox rows", purged)

    async def purge(self) -> int:
        """One round: batch after batch until none is full; returns how many rows went."""
        total = 0
        async with dedicated_connection(self._database_url, "tickets-purge") as conn:
            while not self._stopping.is_set():
                purged = await guarded(
                    postgresql_on(conn), purge_published(conn, self._retention, PURGE_BATCH)
                )
                total += purged
                if purged < PURGE_BATCH:
                    break
                await asyncio.sleep(0.01)  # let other work in between
        return total
