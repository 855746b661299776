"""The tables checked after every bench run: no overbooking; per show, the counter, the
bookings and the outbox rows agree; one BookingMade per booking (tests/support/invariants.py's
WHOLE_DATABASE); and the new bookings held against the 201 answers seen."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg

from tests.support.database import asyncpg_dsn
from tests.support.database import drop_database as drop_test_database
from tests.support.invariants import WHOLE_DATABASE

COUNTERS = """
SELECT (SELECT count(*) FROM bookings) AS bookings, xact_commit, xact_rollback
FROM pg_stat_database WHERE datname = current_database()
"""


@dataclasses.dataclass(frozen=True)
class Counters:
    bookings: int
    commits: int
    rollbacks: int


def counters(database_url: str) -> Counters:
    """Bookings so far, and the database's committed and rolled back transactions (read
    before an API process starts and after it has exited, so that its backends' count)."""
    row = query(database_url, COUNTERS)
    return Counters(row["bookings"], row["xact_commit"], row["xact_rollback"])


def check(
    database_url: str, before: Counters, after: Counters, created: int, in_flight: int
) -> list[str]:
    """The invariants, and the new bookings against the `created` 201 answers: wrk drops the
    requests in flight when it stops, and those may still be booked, hence `in_flight`."""
    row = query(database_url, WHOLE_DATABASE)
    problems = [f"{key}: {value}" for key, value in row.items() if value and key != "bookings"]
    booked = after.bookings - before.bookings
    if not created <= booked <= created + in_flight:
        problems.append(f"{booked} bookings for {created} answers 201 (+ {in_flight} in flight)")
    return problems


def query(database_url: str, sql: str) -> dict[str, int]:
    """The one row `sql` returns, as integers."""

    async def fetch() -> dict[str, int]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            row = await conn.fetchrow(sql)
        finally:
            await conn.close()
        assert row is not None
        return {key: int(value) for key, value in row.items()}

    return asyncio.run(fetch())


def drop_database(database_url: str) -> None:
    asyncio.run(drop_test_database(database_url))
