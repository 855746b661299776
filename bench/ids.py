"""Time-ordered ids against random ones, as the bookings table's primary key sees them.

    uv run --frozen python -m bench.ids [--rows 2000000] [--batch 200]

Inserts `rows` rows, `batch` per statement (as a booking transaction does), into two tables of
the bookings' shape in a database of their own: keys from uuid4 (the baseline, what the service
used before) and from service.common.ids.new_id (UUIDv7). Prints rows/s of each, the ratio, and
the primary key index's size. Random keys land on random index pages, so once the index
outgrows shared_buffers the inserts read and dirty pages all over it; time-ordered keys fill
its right edge.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable

import asyncpg

from service.common.ids import new_id
from tests.support.database import asyncpg_dsn, drop_database, new_database_url

TABLE = """
CREATE TABLE {name} (
    booking_id uuid PRIMARY KEY, show_id uuid NOT NULL, number_of_tickets integer NOT NULL,
    customer_email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())
"""
INSERT = """
INSERT INTO {name} (booking_id, show_id, number_of_tickets, customer_email)
SELECT id, $2, 1, 'fan@example.com' FROM unnest($1::uuid[]) AS id
"""


async def fill(
    conn: asyncpg.Connection, name: str, ids: Callable[[], uuid.UUID], rows: int, batch: int
) -> float:
    await conn.execute(TABLE.format(name=name))
    show = uuid.uuid4()
    started = time.perf_counter()
    for _ in range(rows // batch):
        await conn.execute(INSERT.format(name=name), [ids() for _ in range(batch)], show)
    return rows / (time.perf_counter() - started)


async def run(rows: int, batch: int) -> None:
    url = new_database_url("bench_ids")
    admin = await asyncpg.connect(asyncpg_dsn(url.rsplit("/", 1)[0] + "/postgres"))
    await admin.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
    await admin.close()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        random_rate = await fill(conn, "random_keys", uuid.uuid4, rows, batch)
        ordered_rate = await fill(conn, "ordered_keys", new_id, rows, batch)
        sizes = {
            name: await conn.fetchval(f"SELECT pg_size_pretty(pg_relation_size('{name}_pkey'))")
            for name in ("random_keys", "ordered_keys")
        }
    finally:
        await conn.close()
        await drop_database(url)
    print("| keys | rows/s | primary key index |\n|---|--:|--:|")
    print(f"| uuid4 (baseline) | {random_rate:,.0f} | {sizes['random_keys']} |")
    print(f"| UUIDv7 (new_id) | {ordered_rate:,.0f} | {sizes['ordered_keys']} |")
    print(
        f"\nUUIDv7 / uuid4: {ordered_rate / random_rate:.2f}x ({rows:,} rows, {batch} per insert)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ids")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.batch))


if __name__ == "__main__":
    main()
