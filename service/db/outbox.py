"""The outbox as the relay sees it: what is left to publish, marking, leadership, purge, status.

Plain asyncpg on a dedicated connection rather than the pooled SQLAlchemy engine: the relay needs
LISTEN and a session-level advisory lock, and both live on one physical connection, which a pool
would hand out and take back at will.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.common import timeouts
from service.common.outages import POSTGRESQL, guarded
from service.db import bounds
from service.db.engine import asyncpg_dsn

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the one active relay in a database ("outbox" in ASCII).
RELAY_LOCK_KEY = 0x6F7574626F78
NOTIFY_CHANNEL = "outbox"  # the trigger in migration 0001 notifies here on every insert


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: uuid.UUID
    routing_key: str
    ordering_key: uuid.UUID
    payload: str  # the JSON body, as stored
    correlation_id: str
    created_at: datetime
    traceparent: str | None = None  # the booking request's trace context


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    backlog: int
    oldest_unpublished_age: float | None  # seconds; None when nothing waits
    published_last_minute: int


@contextlib.asynccontextmanager
async def dedicated_connection(
    database_url: str, application_name: str
) -> AsyncIterator[asyncpg.Connection]:
    """One physical connection, its own session, closed (bounded in time) on the way out.

    Connecting to a PostgreSQL that is away raises Unavailable. Closing ends the session, which
    releases whatever it held: a relay's lead goes to a standby at once. Every statement is
    bounded, and a session that stays silent for 10 s is ended by PostgreSQL (bounds.RELAY):
    a relay whose path died gives its lead away even though it cannot say so.
    """
    conn = await guarded(
        POSTGRESQL,
        asyncpg.connect(asyncpg_dsn(database_url), **bounds.RELAY.connect_args(application_name)),
    )
    try:
        yield conn
    finally:
        await _close_quietly(conn)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    """Close politely if the server answers in time, else drop the socket: never raise here,
    where it would hide why the connection is being closed."""
    try:
        await conn.close(timeout=timeouts.CLOSE)
    except Exception as error:
        log.debug("closing a connection failed (dropped instead): %r", error)
    finally:
        if not conn.is_closed():
            conn.terminate()


async def try_lead(conn: asyncpg.Connection) -> bool:
    """Take the relay lock for this connection's lifetime; False while another relay has it.

    The lock is tied to the session: if this process dies or its connection is killed,
    PostgreSQL releases it at once and a standby takes over.
    """
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY))


async def fetch_unpublished(
    conn: asyncpg.Connection, limit: int, in_flight: Sequence[int] = ()
) -> list[OutboxRow]:
    """The oldest rows not yet published and not among `in_flight` (sent, not yet marked)."""
    # Id order is commit order within a show: a booking transaction that commits drew its ids
    # after every earlier writer of that show committed (see service/db/booking.py, BOOK).
    # Across shows ids may commit out of order, which is why this reads "not yet published"
    # rather than "after the last id seen".
    records = await conn.fetch(
        """
        SELECT id, event_id, routing_key, ordering_key, payload::text AS payload,
               correlation_id, created_at, traceparent
        FROM outbox WHERE published_at IS NULL AND id <> ALL($2::bigint[])
        ORDER BY id LIMIT $1
        """,
        limit,
        list(in_flight),
    )
    return [OutboxRow(**dict(r)) for r in records]


async def mark_published(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
        list(ids),
    )


async def purge_published(conn: asyncpg.Connection, older_than: float, limit: int) -> int:
    """Delete up to `limit` rows published more than `older_than` seconds ago; returns how many.

    Small batches with SKIP LOCKED keep each statement short: bookings only insert new rows and
    never wait on these, and two relays purging at once simply take different rows.
    """
    status = await conn.execute(
        """
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox
            WHERE published_at < now() - make_interval(secs => $1)
            ORDER BY published_at LIMIT $2
            FOR UPDATE SKIP LOCKED)
        """,
        older_than,
        limit,
    )
    return int(status.split()[-1])


async def outbox_status(conn: asyncpg.Connection) -> OutboxStatus:
    # Three index-backed subqueries (the partial indexes of migration 0001), not a full scan.
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS backlog,
               (SELECT extract(epoch FROM clock_timestamp() - min(created_at))
                  FROM outbox WHERE published_at IS NULL) AS oldest,
               (SELECT count(*) FROM outbox
                  WHERE published_at > now() - interval '1 minute') AS last_minute
        """
    )
    oldest = row["oldest"]
    return OutboxStatus(
        backlog=row["backlog"],
        oldest_unpublished_age=None if oldest is None else float(oldest),
        published_last_minute=row["last_minute"],
    )
