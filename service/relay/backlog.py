"""The outbox backlog as gauges (tickets_outbox_backlog, tickets_outbox_oldest_age_seconds),
read every few seconds by every relay, leading or not: an alert on the oldest row's age fires
whether the relay is stuck, standing by with no leader, or gone to another host.
"""

from __future__ import annotations

import asyncio
import logging

from service.common import metrics
from service.common.outages import Unavailable, guarded, postgresql_on, sleep_unless
from service.db.outbox import dedicated_connection, outbox_status

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 5.0


class OutboxBacklog:
    def __init__(self, database_url: str, stopping: asyncio.Event) -> None:
        self._database_url = database_url
        self._stopping = stopping

    async def run(self) -> None:
        """Measure every interval until stopped; a failed reading is logged, not fatal."""
        while not self._stopping.is_set():
            try:
                await self._measure_until_stopped()
            except Unavailable as error:
                log.debug("outbox backlog not measured: %s", error)
            except Exception:
                log.exception("outbox backlog not measured")
            await sleep_unless(self._stopping, INTERVAL_SECONDS)

    async def _measure_until_stopped(self) -> None:
        async with dedicated_connection(self._database_url, "tickets-relay-backlog") as conn:
            while not self._stopping.is_set():
                status = await guarded(postgresql_on(conn), outbox_status(conn))
                metrics.OUTBOX_BACKLOG.set(status.backlog)
                metrics.OUTBOX_OLDEST_AGE.set(status.oldest_unpublished_age or 0.0)
                await sleep_unless(self._stopping, INTERVAL_SECONDS)
