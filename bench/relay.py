"""Relay benchmark: outbox → RabbitMQ throughput and commit → delivery latency, each against a
raw aio-pika baseline measured in the same run.

    python -m bench.relay [--events 20000] [--seconds 8]     (also part of python -m bench)

Throughput: the relay drains a backlog of N outbox rows (real BookingMade bodies), against a raw
aio-pika publisher sending N messages of the same size with the same confirms and in-flight depth.
Latency: bookings commit at a steady rate, as the API makes them (the service's coalescer and
booking transaction); a consumer on a queue bound to the exchange stamps each
arrival. Commit → delivered is an upper bound of commit → confirmed (it adds the delivery hop).
The baseline publishes straight to RabbitMQ at the same rate: publish → delivered.
All of it runs in this process on the loop and with the collector thresholds the relay is
deployed with (uvloop, service.common.loop.run), the baseline included.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.broker import declare_events_exchange, unrouted_name
from service.coalescer import BookingCoalescer
from service.common.loop import run as run_on_service_loop
from service.db.booking import book_requests
from service.db.engine import create_engine, migrate, serializable_sessions
from service.domain import BookingMade, BookingRequest
from service.relay import OutboxRelay
from service.settings import Settings
from tests.support.bookings import booking, new_show
from tests.support.database import drop_database, new_database_url
from tests.support.processes import environment, start

Sessions = async_sessionmaker[AsyncSession]
SHOWS = 10
BACKLOG_BATCH = 500  # bookings per transaction while the backlog is filled


@dataclasses.dataclass
class Arrivals:
    """When each booking's event reached the bench queue (time.time())."""

    # repr=False: aio-pika formats its callback's repr per message; 20,000 entries cost seconds.
    at: dict[str, float] = dataclasses.field(default_factory=dict, repr=False)
    count: int = 0
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.at.setdefault(json.loads(message.body)["booking_id"], time.time())
        self.count += 1
        self.changed.set()

    async def wait_for(self, count: int, within: float = 120.0) -> None:
        async with asyncio.timeout(within):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


def event_body(show_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, str, datetime]:
    request = BookingRequest(show_id, 1, "fan@example.com", "bench")
    event = BookingMade.for_booking(request, datetime.now(UTC))
    return event.event_id, request.booking_id, json.dumps(event.body()), event.published_at


async def create_shows(sessions: Sessions) -> list[uuid.UUID]:
    return [await new_show(sessions, 1_000_000_000) for _ in range(SHOWS)]


async def book_one(booker: BookingCoalescer, show_id: uuid.UUID) -> str:
    """One booking as the API makes it (coalesced with those at the same moment); returns the
    booking id once it committed."""
    request = booking(show_id)
    await booker.book(request)
    return str(request.booking_id)


async def fill_backlog(sessions: Sessions, shows: list[uuid.UUID], events: int) -> None:
    """`events` bookings, and so outbox rows, written by the service's booking transaction."""
    for first in range(0, events, BACKLOG_BATCH):
        count = min(BACKLOG_BATCH, events - first)
        requests = [booking(shows[(first + n) % len(shows)]) for n in range(count)]
        await book_requests(sessions, requests, max_attempts=50)


@asynccontextmanager
async def bench_queue(channel: AbstractChannel, exchange: str) -> AsyncIterator[Arrivals]:
    events = await declare_events_exchange(channel, exchange)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(events, "#")
    arrivals = Arrivals()
    tag = await queue.consume(arrivals.on_message, no_ack=True)
    try:
        yield arrivals
    finally:
        await queue.cancel(tag)


async def raw_publish_rate(exchange: AbstractExchange, events: int, in_flight: int) -> float:
    """The baseline: aio-pika with confirms, a sliding window of `in_flight` unconfirmed
    messages (as many as the relay may have: two batches), bodies of the relay's size."""
    show_id = uuid.uuid4()
    messages = [
        aio_pika.Message(
            body.encode(),
            message_id=str(event_id),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type="BookingMade",
            correlation_id="bench",
            timestamp=created,
        )
        for event_id, _, body, created in (event_body(show_id) for _ in range(events))
    ]
    window = asyncio.Semaphore(in_flight)

    async def publish(message: aio_pika.Message) -> None:
        async with window:
            await exchange.publish(message, "BookingMade", mandatory=False)

    started = time.perf_counter()
    await asyncio.gather(*(publish(m) for m in messages))
    return events / (time.perf_counter() - started)


async def relay_drain_rate(settings: Settings, events: int) -> float:
    relay = OutboxRelay(settings)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    async with asyncio.timeout(300):
        while True:
            if relay.published >= events:
                break
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    relay.stop()
    await task
    return events / elapsed


async def paced(rate: float, seconds: float, one: Callable[[], Awaitable[str]]) -> dict[str, float]:
    """Start one operation every 1/rate s (open loop); returns id → when it finished."""
    done: dict[str, float] = {}

    async def timed() -> None:
        done[await one()] = time.time()

    tasks = []
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed()))
    await asyncio.gather(*tasks)
    return done


def percentiles(starts: dict[str, float], arrivals: Arrivals) -> tuple[float, float, float]:
    latencies = sorted((arrivals.at[k] - t) * 1000 for k, t in starts.items())
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98], latencies[-1]


async def run(events: int, seconds: float) -> list[tuple[str, str, str, str]]:
    run_id = uuid.uuid4().hex[:8]
    url = new_database_url("bench_relay")
    await asyncio.to_thread(migrate, url)
    settings = Settings.from_env().replaced(
        database_url=url, events_exchange=f"bench_events_{run_id}"
    )
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    engine = create_engine(url, pool_size=4)
    sessions = serializable_sessions(engine)
    rows: list[tuple[str, str, str, str]] = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_events_exchange(channel, settings.events_exchange)
        shows = await create_shows(sessions)
        booker = BookingCoalescer(
            partial(book_requests, sessions, max_attempts=settings.booking_max_attempts),
            settings.booking_batch_max,
            settings.booking_lanes,
            settings.booking_max_wait,
            settings.booking_max_queued,
        )
        rows.append(await throughput_row(settings, channel, exchange, sessions, shows, events))
        for rate in (10.0, 500.0):
            async with bench_queue(channel, settings.events_exchange) as arrivals:
                raw_p = await raw_latency(exchange, arrivals, rate, seconds)
            async with bench_queue(channel, settings.events_exchange) as arrivals:
                relay_p = await relay_latency(settings, booker, shows, arrivals, rate, seconds)
            rows.append(
                (
                    f"latency at {rate:,.0f} bookings/s: p50 / p99 / max",
                    "commit → delivered: " + " / ".join(f"{v:.1f}" for v in relay_p) + " ms",
                    "raw publish → delivered: " + " / ".join(f"{v:.1f}" for v in raw_p) + " ms",
                    f"p99 +{relay_p[1] - raw_p[1]:.1f} ms",
                )
            )
    finally:
        await engine.dispose()
        channel = await connection.channel()
        for name in (settings.events_exchange, unrouted_name(settings.events_exchange)):
            await channel.exchange_delete(name)
        await channel.queue_delete(unrouted_name(settings.events_exchange))
        await connection.close()
        await drop_database(url)
    return rows


async def throughput_row(
    settings: Settings,
    channel: AbstractChannel,
    exchange: AbstractExchange,
    sessions: Sessions,
    shows: list[uuid.UUID],
    events: int,
) -> tuple[str, str, str, str]:
    window = 2 * settings.relay_batch_size  # the relay has up to two batches in flight
    async with bench_queue(channel, settings.events_exchange) as arrivals:
        # CPU per message of this process, the bench's consumer of every message included (the
        # same for both): building the messages, publishing, confirms; for the relay, also
        # reading and marking its rows.
        cpu = time.process_time()
        raw = await raw_publish_rate(exchange, events, window)
        await arrivals.wait_for(events)  # the consumer idle again before the relay's turn
        raw_cpu = (time.process_time() - cpu) / events * 1e6
        await fill_backlog(sessions, shows, events)
        cpu = time.process_time()
        relay = await relay_drain_rate(settings, events)
        await arrivals.wait_for(2 * events)
        relay_cpu = (time.process_time() - cpu) / events * 1e6
    return (
        f"throughput, backlog of {events:,}",
        f"{relay:,.0f} msg/s ({relay_cpu:,.0f} µs CPU/msg)",
        f"raw aio-pika, confirms, {window} in flight: {raw:,.0f} msg/s ({raw_cpu:,.0f} µs CPU/msg)",
        f"{relay / raw:.2f}x",
    )


async def raw_latency(
    exchange: AbstractExchange, arrivals: Arrivals, rate: float, seconds: float
) -> tuple[float, float, float]:
    show_id = uuid.uuid4()
    starts: dict[str, float] = {}

    async def publish_one() -> str:
        event_id, booking_id, body, _ = event_body(show_id)
        starts[str(booking_id)] = time.time()
        message = aio_pika.Message(
            body.encode(), message_id=str(event_id), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await exchange.publish(message, "BookingMade", mandatory=False)
        return str(booking_id)

    await paced(rate, seconds, publish_one)
    await arrivals.wait_for(len(starts))
    return percentiles(starts, arrivals)


async def relay_latency(
    settings: Settings,
    booker: BookingCoalescer,
    shows: list[uuid.UUID],
    arrivals: Arrivals,
    rate: float,
    seconds: float,
) -> tuple[float, float, float]:
    """The relay as it runs in production: a process of its own beside the writers."""
    with tempfile.TemporaryDirectory() as logs:
        relay = await start("relay", ["service", "relay"], environment(settings), Path(logs))
        try:
            await paced(2, 1, lambda: book_one(booker, shows[0]))  # warm: leading, listening
            await arrivals.wait_for(2)
            arrivals.at.clear()
            arrivals.count = 0
            counter = iter(range(10**9))
            committed = await paced(
                rate, seconds, lambda: book_one(booker, shows[next(counter) % len(shows)])
            )
            await arrivals.wait_for(len(committed))
        finally:
            await relay.stop()
    return percentiles(committed, arrivals)


def measure(events: int, seconds: float) -> list[tuple[str, str, str, str]]:
    """`run` on the loop and with the collector the relay is deployed with (`python -m service
    relay`: service.common.loop.run). The raw baseline shares the process, so it has them too."""
    return run_on_service_loop(run(events, seconds))


def table_lines(rows: list[tuple[str, str, str, str]]) -> list[str]:
    header = ("measurement", "relay", "baseline (same run)", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = []
    for n, row in enumerate([header, *rows]):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay")
    parser.add_argument("--events", type=int, default=20_000, help="backlog size (throughput)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each latency run")
    args = parser.parse_args()
    print("\n".join(table_lines(measure(args.events, args.seconds))))


if __name__ == "__main__":
    main()
