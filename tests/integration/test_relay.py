"""The outbox relay against the real PostgreSQL and RabbitMQ.

Each test gets a database of its own (the relay publishes everything unpublished in its database,
and leadership is per database), and reads what arrived on a queue bound to the run's exchange.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from service.api import create_app
from service.common.metrics import exposition
from service.db.outbox import outbox_status, purge_published
from service.relay import OutboxRelay
from service.relay.purge import Purge, retentions
from service.settings import Settings
from tests.support.api import Client, booking_body, create_show
from tests.support.bookings import book_many
from tests.support.broker import Received, bound_queue, delete_run_objects
from tests.support.database import asyncpg_dsn, create_migrated_database, drop_database
from tests.support.metrics import sample
from tests.support.processes import environment, start
from tests.support.proxy import proxy_to
from tests.support.relay import running
from tests.support.waiting import until


@pytest.fixture
async def relay_settings(settings: Settings) -> AsyncIterator[Settings]:
    url = await create_migrated_database("tickets_relay")
    yield settings.replaced(
        database_url=url,
        relay_poll_interval=0.1,
        relay_max_backoff=0.5,
        relay_publish_timeout=1.0,
        relay_batch_size=200,
    )
    await drop_database(url)


@pytest.fixture
async def db(relay_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(relay_settings.database_url.get_secret_value()))
    yield conn
    await conn.close()


@pytest.fixture
async def channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        yield await connection.channel()


async def outbox_in_commit_order(db: asyncpg.Connection) -> dict[str, list[str]]:
    """Event ids per show in outbox id order, which is the show's commit order."""
    per_show: dict[str, list[str]] = defaultdict(list)
    for row in await db.fetch("SELECT event_id, ordering_key FROM outbox ORDER BY id"):
        per_show[str(row["ordering_key"])].append(str(row["event_id"]))
    return per_show


def received_per_show(received: Received) -> dict[str, list[str]]:
    per_show: dict[str, list[str]] = defaultdict(list)
    for body in received.bodies():
        per_show[body["show_id"]].append(body["header"]["id"])
    return per_show


def assert_at_least_once(received: Received, expected_ids: set[str]) -> None:
    """Every event arrived; a repeat is the same event again (same message_id and body)."""
    assert set(received.message_ids()) == expected_ids
    by_booking: dict[str, set[str]] = defaultdict(set)
    for message, body in zip(received.messages, received.bodies(), strict=True):
        assert message.message_id == body["header"]["id"]
        by_booking[body["booking_id"]].add(str(message.message_id))
    assert all(len(ids) == 1 for ids in by_booking.values())


def nothing_unpublished(db: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int(await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")) == 0

    return check


async def all_event_ids(db: asyncpg.Connection) -> set[str]:
    return {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM outbox")}


async def fenced(received: Received, database_url: str, db: asyncpg.Connection) -> str:
    """Until no more copies of what the relay published so far can arrive.

    A fence: one more booking, committed after everything before it, so published after it, on
    the relay's one channel, into the same queue. Once its event has arrived, every copy sent
    before it has too; and since the relay marks only a confirmed prefix, nothing before the
    fence is sent again later. The fence's own message is taken out of `received`; its event id
    is returned, to leave its outbox row out too."""
    before = await all_event_ids(db)
    await book_many(database_url, 1, 1)
    (fence,) = await all_event_ids(db) - before
    await received.wait_for_all({fence})
    received.messages[:] = [m for m in received.messages if m.message_id != fence]
    return fence


async def test_every_booking_is_one_message_with_the_contract_properties(
    relay_settings: Settings, channel: AbstractChannel, db: asyncpg.Connection
) -> None:
    async with (
        bound_queue(channel, relay_settings.events_exchange, "BookingMade") as received,
        running(OutboxRelay(relay_settings)),
        TestClient(TestServer(create_app(relay_settings))) as client,
    ):
        show_id = await create_show(client, 10)
        answers = [
            await client.post(
                "/book-tickets",
                json=booking_body(show_id, n),
                headers={"Correlation-ID": f"sale-{n}"},
            )
            for n in (1, 2, 3)
        ]
        assert [a.status for a in answers] == [201, 201, 201]
        await received.wait_for(3)
        fence = await fenced(received, relay_settings.database_url.get_secret_value(), db)
        await db.execute("DELETE FROM outbox WHERE event_id = $1", uuid.UUID(fence))

    rows = {
        str(r["event_id"]): r
        for r in await db.fetch(
            "SELECT event_id, payload::text, correlation_id, created_at FROM outbox"
        )
    }
    assert len(received.messages) == len(rows) == 3
    for message, n in zip(received.messages, (1, 2, 3), strict=True):
        body = json.loads(message.body)
        row = rows[str(message.message_id)]
        assert body == json.loads(row["payload"])
        assert body["number_of_tickets"] == n and body["show_id"] == show_id
        assert body["header"]["idempotency_key"] == body["booking_id"]
        assert message.routing_key == "BookingMade"
        assert message.type == "BookingMade"
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.correlation_id == f"sale-{n}" == row["correlation_id"]
        assert message.timestamp is not None
        assert abs(message.timestamp.timestamp() - row["created_at"].timestamp()) < 1
    unpublished = await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    assert unpublished == 0


async def test_several_relays_keep_per_show_commit_order_and_publish_each_event_once(
    relay_settings: Settings, channel: AbstractChannel, db: asyncpg.Connection
) -> None:
    relays = [OutboxRelay(relay_settings) for _ in range(3)]
    async with bound_queue(channel, relay_settings.events_exchange) as received:
        async with running(relays[0]), running(relays[1]), running(relays[2]):
            first = asyncio.create_task(
                book_many(relay_settings.database_url.get_secret_value(), 5, 120)
            )
            await received.wait_for(100)
            # Hand the lead over in the middle of the stream: the leader stops gracefully.
            leader = next(r for r in relays if r.leading)
            leader.stop()
            await first
            await book_many(relay_settings.database_url.get_secret_value(), 4, 120)
            await received.wait_for(1080)
            fence = await fenced(received, relay_settings.database_url.get_secret_value(), db)
            await db.execute("DELETE FROM outbox WHERE event_id = $1", uuid.UUID(fence))
        assert sum(r.published for r in relays) == 1081  # the fence's event among them
        assert sum(1 for r in relays if r.published) >= 2, "the lead never changed hands"

    assert len(received.messages) == 1080
    assert len(set(received.message_ids())) == 1080
    assert received_per_show(received) == await outbox_in_commit_order(db)


async def test_relay_killed_mid_backlog_loses_nothing(
    relay_settings: Settings, channel: AbstractChannel, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await book_many(relay_settings.database_url.get_secret_value(), 4, 1500, batch=100)
    env = environment(relay_settings, RELAY_BATCH_SIZE="100")
    async with bound_queue(channel, relay_settings.events_exchange) as received:
        relay = await start("relay-1", ["service", "relay"], env, tmp_path)
        await received.wait_for(300)
        await relay.kill()
        published = await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        assert published < 6000, "the relay finished before it was killed: test proves nothing"

        again = await start("relay-2", ["service", "relay"], env, tmp_path)
        try:
            await received.wait_for_all(await all_event_ids(db), within=60)
        finally:
            await again.stop()
    assert_at_least_once(received, await all_event_ids(db))
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_broker_outage_keeps_bookings_flowing_and_drains_after(
    relay_settings: Settings,
    channel: AbstractChannel,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.relay")
    amqp = URL(relay_settings.amqp_url.get_secret_value())
    async with proxy_to(amqp.host or "127.0.0.1", amqp.port or 5672) as proxy:
        behind_proxy = relay_settings.replaced(amqp_url=str(amqp.with_port(proxy.port)))
        relay = OutboxRelay(behind_proxy)
        async with (
            bound_queue(channel, relay_settings.events_exchange) as received,
            running(relay),
            TestClient(TestServer(create_app(relay_settings))) as client,
        ):
            show_id = await create_show(client, 1000)
            await book_n(client, show_id, 10)
            await received.wait_for(10)
            await until(nothing_unpublished(db))  # confirmed and marked, not only delivered

            proxy.cut()
            await book_n(client, show_id, 40)  # every booking succeeds while the broker is away

            async def relay_noticed() -> bool:  # it tries, fails and backs off meanwhile
                return any("is not reachable" in r.getMessage() for r in caplog.records)

            await until(relay_noticed)
            assert len(received.messages) == 10
            assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 40

            proxy.heal()
            await received.wait_for_all(await all_event_ids(db), within=20)

    assert_at_least_once(received, await all_event_ids(db))
    outages = [r for r in caplog.records if "is not reachable" in r.getMessage()]
    recoveries = [r for r in caplog.records if "is back after" in r.getMessage()]
    assert (len(outages), len(recoveries)) == (1, 1), "one log line per state change"


async def test_publish_that_hangs_times_out_and_recovers(
    relay_settings: Settings, channel: AbstractChannel, db: asyncpg.Connection
) -> None:
    amqp = URL(relay_settings.amqp_url.get_secret_value())
    async with proxy_to(amqp.host or "127.0.0.1", amqp.port or 5672) as proxy:
        behind_proxy = relay_settings.replaced(amqp_url=str(amqp.with_port(proxy.port)))
        async with (
            bound_queue(channel, relay_settings.events_exchange) as received,
            running(OutboxRelay(behind_proxy)),
        ):
            await book_many(relay_settings.database_url.get_secret_value(), 1, 5)
            await received.wait_for(5)
            await until(nothing_unpublished(db))
            proxy.blackhole()  # the broker stops answering: confirms never come
            failures = sample(exposition()[0].decode(), "tickets_relay_publish_failures_total")
            await book_many(relay_settings.database_url.get_secret_value(), 2, 20)

            async def timed_out() -> bool:
                scrape = exposition()[0].decode()
                return sample(scrape, "tickets_relay_publish_failures_total") > failures

            await until(timed_out)
            assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 40
            # New connections get through; the hung one stays hung, never closed by anyone: the
            # relay gets out by its own publish timeout, or not at all (AMQP heartbeats would
            # take longer than the bound below).
            proxy.reopen()
            await received.wait_for_all(await all_event_ids(db), within=6)

    assert_at_least_once(received, await all_event_ids(db))


async def test_relay_recovers_when_its_database_connections_are_killed(
    relay_settings: Settings, channel: AbstractChannel, db: asyncpg.Connection
) -> None:
    killed = 0

    async def kill_relay_sessions() -> None:
        nonlocal killed
        for _ in range(8):
            await asyncio.sleep(0.15)
            killed += await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'tickets-relay'"
            )

    async with (
        bound_queue(channel, relay_settings.events_exchange) as received,
        running(OutboxRelay(relay_settings)),
    ):
        await asyncio.gather(
            book_many(relay_settings.database_url.get_secret_value(), 3, 200, batch=5),
            kill_relay_sessions(),
        )
        await received.wait_for_all(await all_event_ids(db))

    assert killed >= 3, "no relay session was killed: test proves nothing"
    assert_at_least_once(received, await all_event_ids(db))


async def test_events_no_queue_is_bound_for_are_kept_not_dropped(
    relay_settings: Settings, channel: AbstractChannel
) -> None:
    lonely = relay_settings.replaced(events_exchange=f"{relay_settings.events_exchange}.nobody")
    try:
        async with running(OutboxRelay(lonely)) as relay:
            await book_many(relay_settings.database_url.get_secret_value(), 1, 7)

            async def all_published() -> bool:
                return relay.published == 7

            await until(all_published)
        queue = await channel.declare_queue(f"{lonely.events_exchange}.unrouted", passive=True)
        assert queue.declaration_result.message_count == 7
    finally:
        await delete_run_objects(lonely.amqp_url.get_secret_value(), lonely.events_exchange, [])


async def test_published_rows_are_purged_after_retention_and_unpublished_never(
    relay_settings: Settings, db: asyncpg.Connection
) -> None:
    await book_many(relay_settings.database_url.get_secret_value(), 1, 30)
    await db.execute(
        "UPDATE outbox SET published_at = now() - interval '2 hours'"
        " WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 20)"
    )
    await db.execute(
        "UPDATE outbox SET published_at = now() WHERE id IN"
        " (SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 5)"
    )
    assert await purge_published(db, older_than=3600, limit=8) == 8
    assert await purge_published(db, older_than=3600, limit=100) == 12
    assert await purge_published(db, older_than=3600, limit=100) == 0
    left = await db.fetch("SELECT published_at IS NULL AS unpublished FROM outbox")
    assert sorted(r["unpublished"] for r in left) == [False] * 5 + [True] * 5

    # And the relay does it by itself, on its interval.
    eager = relay_settings.replaced(outbox_retention=0, outbox_purge_interval=0.2)

    async def outbox_empty() -> bool:
        return int(await db.fetchval("SELECT count(*) FROM outbox")) == 0

    async with running(OutboxRelay(eager)):
        await until(outbox_empty)


async def test_outbox_status_reports_backlog_age_and_recent_publishes(
    relay_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    empty = await outbox_status(db)
    assert (empty.backlog, empty.oldest_unpublished_age, empty.published_last_minute) == (
        0,
        None,
        0,
    )
    await book_many(relay_settings.database_url.get_secret_value(), 2, 10)
    await db.execute(
        "UPDATE outbox SET published_at = now() WHERE id IN (SELECT id FROM outbox LIMIT 4)"
    )
    status = await outbox_status(db)
    assert (status.backlog, status.published_last_minute) == (16, 4)
    assert status.oldest_unpublished_age is not None and status.oldest_unpublished_age >= 0

    child = await start(
        "status", ["service", "outbox-status"], environment(relay_settings), tmp_path
    )
    assert await child.process.wait() == 0
    output = child.output()
    assert "backlog (unpublished rows):     16" in output
    assert "published in the last minute:   4" in output


async def book_n(client: Client, show_id: str, count: int) -> None:
    answers = await asyncio.gather(
        *(client.post("/book-tickets", json=booking_body(show_id, 1)) for _ in range(count))
    )
    assert [a.status for a in answers] == [201] * count


async def test_the_purge_keeps_what_is_within_retention_and_goes_past_one_batch(
    relay_settings: Settings, db: asyncpg.Connection
) -> None:
    await book_many(relay_settings.database_url.get_secret_value(), 3, 1000, batch=250)
    # 2,500 published two hours ago (more than two purge batches of 1,000), 300 published a
    # moment ago, 200 never published.
    await db.execute(
        "UPDATE outbox SET published_at = now() - interval '2 hours'"
        " WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 2500)"
    )
    await db.execute(
        "UPDATE outbox SET published_at = now() - interval '10 seconds'"
        " WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 300)"
    )
    # One round, as the relay runs it every OUTBOX_PURGE_INTERVAL, with a retention of an hour.
    purge = Purge(
        relay_settings.database_url.get_secret_value(),
        retentions(outbox_retention=3600, idempotency_key_ttl=86_400),
        interval=60,
        stopping=asyncio.Event(),
    )
    purged = await purge.purge()
    assert purged["published outbox rows"] == 2500
    left = await db.fetch(
        "SELECT published_at IS NULL AS unpublished, count(*) AS n FROM outbox GROUP BY 1"
    )
    assert {r["unpublished"]: r["n"] for r in left} == {False: 300, True: 200}
