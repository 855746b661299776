"""A show's outbox ids follow its commit order, even when its writers race each other.

The relay publishes in outbox id order, so per-show event order rests on this. The argument
(service/db/booking.py, BOOK) needs SERIALIZABLE: a writer whose snapshot predates another's
committed counter update fails instead of updating, so a writer that commits drew its ids after
every earlier writer of that show had committed. Under READ COMMITTED a writer can draw its ids,
wait for the counter's row lock, and commit after a writer with later ids.

Commit order is read from the counter itself: a trigger (this test's, not the schema's) logs the
value each transaction leaves in `tickets_booked`; one ticket per booking, so the k-th commit on
a show leaves k. Each outbox row is matched to its transaction by xmin.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

import asyncpg

from service.db.booking import book_requests
from service.db.engine import create_engine, serializable_sessions
from tests.support.bookings import booking, new_show
from tests.support.consumers import own_database
from tests.support.database import asyncpg_dsn

WRITERS = 24  # concurrent transactions, one booking each, no coalescing
BOOKINGS = 480

COUNTER_LOG = """
CREATE TABLE counter_log (xid xid NOT NULL, show_id uuid NOT NULL, booked integer NOT NULL);
CREATE FUNCTION log_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counter_log VALUES
        ((txid_current() % 4294967296)::text::xid, NEW.show_id, NEW.tickets_booked);
    RETURN NULL;
END $$;
CREATE TRIGGER log_counter AFTER UPDATE OF tickets_booked ON shows
    FOR EACH ROW EXECUTE FUNCTION log_counter();
"""


async def test_outbox_ids_follow_commit_order_under_concurrent_writers() -> None:
    async with own_database() as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        engine = create_engine(url, pool_size=WRITERS)
        try:
            await conn.execute(COUNTER_LOG)
            sessions = serializable_sessions(engine)
            show_id = await new_show(sessions, 1_000_000)
            writers = asyncio.Semaphore(WRITERS)

            async def book_one() -> None:
                async with writers:
                    await book_requests(sessions, [booking(show_id)], max_attempts=1_000)

            async with asyncio.timeout(120):
                await asyncio.gather(*(book_one() for _ in range(BOOKINGS)))
            rows = await conn.fetch(
                """
                SELECT o.id, c.booked FROM outbox o JOIN counter_log c ON c.xid = o.xmin
                WHERE o.ordering_key = $1 ORDER BY o.id
                """,
                show_id,
            )
        finally:
            await engine.dispose()
            await conn.close()
    assert len(rows) == BOOKINGS
    commit_order = [row["booked"] for row in rows]  # in outbox id order
    out_of_order = sum(a > b for a, b in itertools.pairwise(commit_order))
    assert out_of_order == 0, f"{out_of_order} outbox ids out of commit order"
    assert commit_order == list(range(1, BOOKINGS + 1))


async def test_the_check_constraints_guard_every_count(db: asyncpg.Connection) -> None:
    """tickets_booked never below 0, a booking never of fewer than 1 ticket."""
    show_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO shows (show_id, dead_nation_id, number_of_tickets, start_time, title, venue)"
        " VALUES ($1, $2, 5, now(), 'Show', 'Hall')",
        show_id,
        uuid.uuid4(),
    )
    try:
        await db.execute("UPDATE shows SET tickets_booked = -1 WHERE show_id = $1", show_id)
    except asyncpg.CheckViolationError:
        pass
    else:
        raise AssertionError("tickets_booked went below 0")
    try:
        await db.execute(
            "INSERT INTO bookings (booking_id, show_id, number_of_tickets, customer_email,"
            " correlation_id) VALUES ($1, $2, 0, 'a@b.example', 'c')",
            uuid.uuid4(),
            show_id,
        )
    except asyncpg.CheckViolationError:
        pass
    else:
        raise AssertionError("a booking of 0 tickets was stored")
