"""What one booking transaction costs the API's process, by the layers it runs through.

    uv run --frozen python -m bench.transaction_cost [--transactions 1000] [--batch 1]

The same transaction (read the show's capacity, decide, one BOOK statement: counter, bookings,
outbox rows; SERIALIZABLE) on the same database, run `--transactions` times in a row by each
way, twice each, alternately; the CPU time of this process and the wall time per transaction:

    session      service.db.booking.book_requests, as the API runs it (AsyncSession)
    connection   the same _book on an AsyncConnection instead of a Session
    pool+driver  SQLAlchemy's pool hands out the connection; asyncpg runs the transaction
    asyncpg      asyncpg alone, one connection (the baseline: what the driver costs)

Not part of `make bench` (no target names it): it measures what a change of layers would save,
for docs/PERFORMANCE.md. With a batch of 1 the figures are the transaction's fixed cost, which
the API pays once per batch of coalesced requests.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import uvloop
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.db import booking
from service.db.engine import asyncpg_dsn, create_engine
from service.db.engine import serializable_sessions as sessions_of
from service.domain import BookingRequest, Capacity, decide_for_shows
from tests.support.database import create_migrated_database, drop_database

Way = Callable[[], Awaitable[object]]
SHOW = """
    INSERT INTO shows (show_id, dead_nation_id, number_of_tickets, start_time, title, venue)
    VALUES (:s, :d, 100000000, now(), 'bench', 'bench')
"""


async def run(transactions: int, batch: int) -> list[str]:
    url = await create_migrated_database("tickets_bench_tx")
    engine = create_engine(url)  # as the API makes it (service/api/app.py)
    driver = await asyncpg.connect(asyncpg_dsn(url))
    try:
        show = uuid.uuid4()
        async with engine.begin() as connection:
            await connection.execute(text(SHOW), {"s": show, "d": uuid.uuid4()})
        ways = _ways(engine, driver, show, batch)
        lines = [f"{batch} booking(s) per transaction, {transactions} transactions per run", ""]
        lines += ["| way | CPU µs / tx | wall µs / tx | CPU x asyncpg |", "|---|--:|--:|--:|"]
        measured = {
            name: [await _measure(way, transactions) for _ in range(2)] for name, way in ways
        }
        base = min(cpu for cpu, _ in measured["asyncpg"])
        for name, runs in measured.items():
            cpus = " / ".join(f"{cpu:,.0f}" for cpu, _ in runs)
            walls = " / ".join(f"{wall:,.0f}" for _, wall in runs)
            lines.append(f"| {name} | {cpus} | {walls} | {min(c for c, _ in runs) / base:.2f} |")
        return lines
    finally:
        await driver.close()
        await engine.dispose()
        await drop_database(url)


def _ways(
    engine: AsyncEngine, driver: asyncpg.Connection, show: uuid.UUID, batch: int
) -> list[tuple[str, Way]]:
    sessions = sessions_of(engine)
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    statements = (_compiled(booking.READ_CAPACITY, engine), _compiled(booking.BOOK, engine))

    def requests() -> list[BookingRequest]:
        return [BookingRequest(show, 1, "fan@example.com", "bench") for _ in range(batch)]

    async def session() -> object:
        return await booking.book_requests(sessions, requests(), 10)

    async def connection() -> object:
        async with serializable.connect() as conn, conn.begin():
            # The Session's code, handed a Connection: both have execute() with these results.
            return await booking._book(cast(AsyncSession, conn), requests(), None, look_up=False)

    async def pool_and_driver() -> object:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            return await _on_driver(raw, requests(), statements)

    async def driver_alone() -> object:
        return await _on_driver(driver, requests(), statements)

    return [
        ("session", session),
        ("connection", connection),
        ("pool+driver", pool_and_driver),
        ("asyncpg", driver_alone),
    ]


def _compiled(statement: Any, engine: AsyncEngine) -> tuple[str, list[str]]:
    """The statement as asyncpg takes it ($1, $2, ...), and its parameters' names in order."""
    compiled = statement.compile(dialect=engine.dialect)
    return str(compiled), list(compiled.positiontup or [])


async def _on_driver(
    raw: asyncpg.Connection,
    requests: list[BookingRequest],
    statements: tuple[tuple[str, list[str]], tuple[str, list[str]]],
) -> object:
    (read_sql, _), (book_sql, book_names) = statements  # READ_CAPACITY's one: the show ids
    async with raw.transaction(isolation="serializable"):
        now = datetime.now(UTC)
        rows = await raw.fetch(read_sql, sorted({r.show_id for r in requests}))
        capacities = {
            row["show_id"]: Capacity(row["number_of_tickets"], row["tickets_booked"])
            for row in rows
        }
        decision = decide_for_shows(capacities, requests, {}, now)
        parameters = booking.book_parameters(decision, now)
        return await raw.fetchrow(book_sql, *(parameters[name] for name in book_names))


async def _measure(way: Way, transactions: int) -> tuple[float, float]:
    for _ in range(50):  # warm: statement caches, pool
        await way()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(transactions):
        await way()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1e6 / transactions, wall * 1e6 / transactions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transaction_cost")
    parser.add_argument("--transactions", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1, help="bookings per transaction")
    args = parser.parse_args(argv)
    print("\n".join(uvloop.run(run(args.transactions, args.batch))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
