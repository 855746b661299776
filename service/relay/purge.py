"""The purge: what is kept only for a while is deleted beside the relay, in small batches.

Two kinds of rows: published outbox rows past OUTBOX_RETENTION, and idempotency keys past
IDEMPOTENCY_KEY_TTL. The relay runs it because it is the one process every deployment runs
exactly as long as the service does, and it is not the API: a purge round must not take an
API process's event loop from the buyers, nor run once per API worker.

Any relay purges, leading or standby: the statements take different rows (SKIP LOCKED) and
bookings never wait for them. The purge never dies: a failed round is logged and the next one
comes after the interval, so a database outage or a bug costs one round, not the purge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from service.common.outages import Unavailable, guarded, postgresql_on, sleep_unless
from service.db.idempotency_keys import purge_expired_keys
from service.db.outbox import dedicated_connection, purge_published

log = logging.getLogger(__name__)

PURGE_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Retention:
    """Rows of one kind, kept for `seconds`; `purge` deletes a batch of older ones."""

    what: str
    seconds: float
    purge: Callable[[asyncpg.Connection, float, int], Awaitable[int]]


def retentions(outbox_retention: float, idempotency_key_ttl: float) -> list[Retention]:
    return [
        Retention("published outbox rows", outbox_retention, purge_published),
        Retention("expired idempotency keys", idempotency_key_ttl, purge_expired_keys),
    ]


class Purge:
    def __init__(
        self,
        database_url: str,
        kept: list[Retention],
        interval: float,
        stopping: asyncio.Event,
    ) -> None:
        self._database_url = database_url
        self._kept = kept
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
                log.warning("purge failed, next try in %.0f s: %s", self._interval, error)
                continue
            except Exception:
                log.exception("purge failed unexpectedly, next try in %.0f s", self._interval)
                continue
            for what, count in purged.items():
                if count:
                    log.info("purged %d %s", count, what)

    async def purge(self) -> dict[str, int]:
        """One round: for each kind, batch after batch until none is full; how many went."""
        purged: dict[str, int] = {}
        async with dedicated_connection(self._database_url, "tickets-purge") as conn:
            for kept in self._kept:
                purged[kept.what] = await self._purge(conn, kept)
        return purged

    async def _purge(self, conn: asyncpg.Connection, kept: Retention) -> int:
        total = 0
        while not self._stopping.is_set():
            purged = await guarded(postgresql_on(conn), kept.purge(conn, kept.seconds, PURGE_BATCH))
            total += purged
            if purged < PURGE_BATCH:
                break
            await asyncio.sleep(0.01)  # let other work in between
        return total
