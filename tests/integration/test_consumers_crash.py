"""A consumer process SIGKILLed mid-stream and restarted: the read model still equals the
bookings, as `python -m consumers reconcile` checks."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from service.db.engine import create_engine, serializable_sessions
from service.db.shows import NewShow, create_show
from service.domain import BookingRequest
from service.settings import Settings
from tests.support.bookings import book_batch
from tests.support.consumers import consumer_queues, depths, fast, own_database
from tests.support.database import asyncpg_dsn
from tests.support.events import outbox_messages, publish
from tests.support.processes import Child, environment, start
from tests.support.waiting import until

NAME = "show_sales"
SHOWS, PER_SHOW, BATCH = 4, 200, 50


async def book(database_url: str) -> int:
    """SHOWS x PER_SHOW bookings of 1-3 tickets through the real booking transaction."""
    engine = create_engine(database_url, pool_size=2)
    sessions = serializable_sessions(engine)
    try:
        for _ in range(SHOWS):
            show = NewShow(uuid.uuid4(), 10_000, datetime(2026, 12, 31, tzinfo=UTC), "S", "H")
            show_id, _ = await create_show(sessions, show)
            for start_at in range(0, PER_SHOW, BATCH):
                requests = [
                    BookingRequest(show_id, 1 + n % 3, "fan@example.com", f"crash-{n}")
                    for n in range(start_at, start_at + BATCH)
                ]
                decision = await book_batch(sessions, show_id, requests, max_attempts=10)
                assert len(decision.accepted) == BATCH
    finally:
        await engine.dispose()
    return SHOWS * PER_SHOW


async def reconcile(env: dict[str, str], log_dir: Path, name: str) -> tuple[int, str]:
    child = await start(name, ["consumers", "reconcile"], env, log_dir)
    async with asyncio.timeout(20):
        code = await child.process.wait()
    return code, child.output()


async def test_sigkill_mid_stream_then_restart_leaves_no_difference(
    settings: Settings, tmp_path: Path
) -> None:
    async with own_database() as database_url:
        settings = fast(
            settings.replaced(database_url=database_url),
            events_exchange=f"{settings.events_exchange}.crash",
        )
        async with consumer_queues(settings, NAME) as (queues,):
            total = await book(database_url)
            env = environment(settings)
            db = await asyncpg.connect(asyncpg_dsn(database_url))
            try:

                async def bookings_applied() -> int:
                    return int(
                        await db.fetchval("SELECT coalesce(sum(bookings), 0) FROM show_sales")
                    )

                first = await start("consumers-1", ["consumers", "run", NAME], env, tmp_path)
                await publish(settings, await outbox_messages(database_url))

                async def some_applied() -> bool:
                    return await bookings_applied() >= total // 10

                await until(some_applied, within=20)
                await first.kill()
                killed_at = await bookings_applied()
                assert killed_at < total, "the consumer was not killed mid-stream"

                second = await start("consumers-2", ["consumers", "run", NAME], env, tmp_path)

                async def all_applied() -> bool:
                    return await bookings_applied() >= total

                await until(all_applied, within=30)
                assert await second.stop() == 0
                stats = stopped_line(second)

                code, output = await reconcile(env, tmp_path, "reconcile-1")
                assert code == 0, output
                assert f"show_sales matches the bookings table ({SHOWS} shows)" in output
                assert await db.fetchval("SELECT count(*) FROM inbox") == total
                assert set((await depths(settings, queues)).values()) == {0}

                # And reconcile does see a difference when there is one.
                show_id = await db.fetchval("SELECT show_id FROM show_sales LIMIT 1")
                await db.execute(
                    "UPDATE show_sales SET tickets_sold = tickets_sold - 1 WHERE show_id = $1",
                    show_id,
                )
                code, output = await reconcile(env, tmp_path, "reconcile-2")
                assert code == 1
                assert f"show {show_id}: bookings table" in output
                assert f"1 of {SHOWS} shows differ" in output
            finally:
                await db.close()
            print(f"\nkilled after {killed_at} of {total} bookings applied; after restart: {stats}")


def stopped_line(child: Child) -> str:
    found = re.search(r"show_sales stopped: (.*)", child.output())
    assert found, child.output()
    return found.group(1)
