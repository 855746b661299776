"""The whole pipeline as `make run` starts it, under wrk: `python -m service api`, `python -m
service relay` and `python -m consumers run all` as separate processes, in a database and an
events exchange of the bench's own (EVENTS_EXCHANGE=bench_events_<id>, so the consumers' queues
are bench_events_<id>.<consumer>; all deleted at the end). TICKET_PROVIDER_URL is unset, so
`consumers run all` runs show_sales alone, as `make run` does without a provider.

One pgbench hot-show baseline right before; then wrk books a hot show from 100 connections
(warm-up, then the measured run). After wrk ends:
- delivered: seconds until every outbox row is marked published, which the relay does only after
  RabbitMQ confirmed its message (the confirm is RabbitMQ taking the event over; no queue or
  consumer of the bench's own adds to what the two cores carry);
- caught up: seconds until show_sales has applied them all (sum of show_sales.bookings equals
  the bookings; waited for at most `consumer_wait` seconds);
- consumer lag: per event, show_sales' inbox row (processed_at: its transaction's start) less the
  outbox row's created_at (the booking's time), p50/p99/max over the events applied: from the
  booking written to the read model updated, as the same clock measures both.
Then the invariants (bench/invariants.py) and an outbox with nothing left unpublished.

Last, with the pipeline stopped, bench/broker_floor.py in a process of its own: what raw
aio-pika and RabbitMQ cost per message with none of our code. With the API's, PostgreSQL's and
wrk's measured shares, that is the pipeline's CPU per booking if the relay and show_sales cost
no more than publishing and consuming do: a floor to hold against what two cores allow at the
target rate, so a run tells whether the target is within reach on the machine at hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager

import asyncpg

from bench import broker_floor, invariants, pgbench, scenarios, service
from bench.wrk import WrkResult
from consumers.bootstrap import NAMES, topology
from service.settings import Settings
from tests.support.broker import delete_run_objects
from tests.support.database import asyncpg_dsn, new_database_url

CONNECTIONS = 100
FLOOR_MESSAGES = 10_000
LAG = """
SELECT count(*) AS applied,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag) AS cuts,
       max(lag) AS worst
FROM (SELECT extract(epoch FROM i.processed_at - o.created_at) AS lag
      FROM inbox i JOIN outbox o ON o.event_id = i.message_id
      WHERE i.consumer = 'show_sales' AND o.routing_key = 'BookingMade') AS lags
"""


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    baseline: pgbench.Baseline
    load: WrkResult
    bookings: int
    delivered_after: float | None  # s after wrk ended; None: not within the wait
    caught_up_after: float | None  # the same for show_sales
    applied: int  # BookingMade applied by show_sales when the lag was read
    lag_ms: tuple[float, float, float]  # p50, p99, max
    api_peak_rss_mb: float
    cpu_per_booking_us: dict[str, float]  # by process, from the warm-up until caught up
    problems: list[str]
    floor: broker_floor.Floor | None = None  # raw aio-pika's, measured after the run

    @property
    def ratio(self) -> float:
        return self.load.rate / self.baseline.rate

    def floor_per_booking_us(self) -> dict[str, float]:
        """CPU per booking with the relay, show_sales and RabbitMQ at raw aio-pika's cost: the
        API, PostgreSQL and wrk as measured (wrk only loads the API)."""
        if self.floor is None:
            return {}
        shares = self.cpu_per_booking_us
        measured = {name: shares[name] for name in ("api", "PostgreSQL", "wrk") if name in shares}
        return measured | {
            "raw publish": self.floor.publish_us,
            "raw consume": self.floor.consume_us,
            "RabbitMQ raw": self.floor.rabbitmq_us,
        }


def run(options: scenarios.Options, consumer_wait: float) -> PipelineRun:
    database_url = new_database_url("bench_pipeline")
    exchange = f"bench_events_{uuid.uuid4().hex[:8]}"
    baseline_db = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    service.migrate(database_url)
    pgbench.create_database(baseline_db)
    try:
        baseline = pgbench.run(options.scripts, baseline_db, pgbench.HOT, options.duration)
        env = service.environment(database_url, EVENTS_EXCHANGE=exchange, **options.env)
        measured = asyncio.run(measure(options, env, baseline, consumer_wait))
        print("  broker floor: raw aio-pika ...", file=sys.stderr)
        floor = broker_floor.in_subprocess(env, FLOOR_MESSAGES)
        return dataclasses.replace(measured, floor=floor)
    finally:
        pgbench.drop_database(baseline_db)
        asyncio.run(delete_objects(exchange))
        invariants.drop_database(database_url)


async def measure(
    options: scenarios.Options,
    env: dict[str, str],
    baseline: pgbench.Baseline,
    consumer_wait: float,
) -> PipelineRun:
    print("  pipeline: api, relay, consumers, hot show, 100 connections ...", file=sys.stderr)
    # Blocking start-up (readiness polls) is fine: nothing is published before the load.
    with processes(options.variants[0].command, env) as running:
        return await load_and_wait(options, running, env, baseline, consumer_wait)


@dataclasses.dataclass(frozen=True)
class Running:
    api: service.Child
    relay: service.Child
    consumers: service.Child


@contextmanager
def processes(api_command: list[str], env: dict[str, str]) -> Iterator[Running]:
    """The relay, the consumers and the API, each ready; stopped (SIGTERM) at the end."""
    with ExitStack() as stack:
        relay = stack.enter_context(service.child(service.RELAY, env, "RELAY_HTTP_PORT"))
        consumers = stack.enter_context(
            service.child(service.CONSUMERS, env, "CONSUMERS_HTTP_PORT")
        )
        yield Running(stack.enter_context(service.api(api_command, env)), relay, consumers)


class CpuClock:
    """CPU seconds by process from the load's start until show_sales has caught up (so the
    events' whole journey is in): the pipeline's three processes, RabbitMQ, PostgreSQL (every
    backend) and wrk (a finished child of this process). Where two cores go, per booking."""

    def __init__(self, running: Running) -> None:
        self._ours = {
            "api": running.api.process.pid,
            "relay": running.relay.process.pid,
            "consumers": running.consumers.process.pid,
        }
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        used = {name: service.cpu_seconds_of(pid) for name, pid in self._ours.items()}
        used["RabbitMQ"] = sum(map(service.cpu_seconds_of, service.pids_named("beam.smp")))
        # A backend that ends during the load takes its CPU along: the database's share is a
        # floor (the pipeline's connections are pooled and stay).
        used["PostgreSQL"] = sum(map(service.cpu_seconds_of, service.pids_named("postgres")))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        used["wrk"] = children.ru_utime + children.ru_stime
        return used

    def per_booking_us(self, bookings: int) -> dict[str, float]:
        end = self._read()
        return {name: (end[name] - self._start[name]) / bookings * 1e6 for name in end}


async def load_and_wait(
    options: scenarios.Options,
    running: Running,
    env: dict[str, str],
    baseline: pgbench.Baseline,
    consumer_wait: float,
) -> PipelineRun:
    shows = await asyncio.to_thread(service.create_shows, running.api.base_url, 1)
    clock = CpuClock(running)
    got = await asyncio.to_thread(scenarios.measure, options, running.api, shows, CONNECTIONS)
    ended = time.monotonic()
    created = got.warmup.count(201) + got.load.count(201)
    conn = await asyncpg.connect(asyncpg_dsn(env["DATABASE_URL"]))
    try:
        delivered = await wait_for(conn, ended, all_confirmed(conn), 60.0)
        caught_up = await wait_for(conn, ended, show_sales_caught_up(conn), consumer_wait)
        lag = await conn.fetchrow(LAG)
        bookings = int(await conn.fetchval("SELECT count(*) FROM bookings"))
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    cpu = clock.per_booking_us(max(bookings, 1))  # until show_sales caught up: all their work
    problems = await asyncio.to_thread(
        invariants.check,
        env["DATABASE_URL"],
        NOTHING,
        invariants.Counters(bookings, 0, 0),
        created,
        2 * CONNECTIONS,
    )
    problems += [f"{unpublished} outbox rows unpublished"] if unpublished else []
    problems += scenarios.answers_problems(got.warmup, "warm-up")
    problems += scenarios.answers_problems(got.load, "measured")
    assert lag is not None
    cuts = lag["cuts"] or [float("nan")] * 2
    return PipelineRun(
        baseline=baseline,
        load=got.load,
        bookings=bookings,
        delivered_after=delivered,
        caught_up_after=caught_up,
        applied=int(lag["applied"]),
        lag_ms=(cuts[0] * 1000, cuts[1] * 1000, float(lag["worst"] or "nan") * 1000),
        api_peak_rss_mb=got.peak_rss_mb,
        cpu_per_booking_us=cpu,
        problems=problems,
    )


NOTHING = invariants.Counters(0, 0, 0)


async def wait_for(
    conn: asyncpg.Connection, since: float, done: Callable[[int], Awaitable[bool]], within: float
) -> float | None:
    """Seconds from `since` until done(bookings in the table) holds (polled every 20 ms), or None
    if it does not within `within` seconds of `since`."""
    while True:
        booked = int(await conn.fetchval("SELECT count(*) FROM bookings"))
        if await done(booked):
            return time.monotonic() - since
        if time.monotonic() - since > within:
            return None
        await asyncio.sleep(0.02)


def all_confirmed(conn: asyncpg.Connection) -> Callable[[int], Awaitable[bool]]:
    async def done(booked: int) -> bool:
        left = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return int(left) == 0

    return done


def show_sales_caught_up(conn: asyncpg.Connection) -> Callable[[int], Awaitable[bool]]:
    async def done(booked: int) -> bool:
        applied = await conn.fetchval("SELECT coalesce(sum(bookings), 0) FROM show_sales")
        return int(applied) >= booked

    return done


async def delete_objects(exchange: str) -> None:
    """The exchange, its unrouted queue, and every consumer's queues (main, retries, dlq)."""
    settings = Settings.from_env().replaced(events_exchange=exchange)
    queues = [q for name in NAMES for q in topology(settings, name).queue_names()]
    await delete_run_objects(settings.amqp_url.get_secret_value(), exchange, queues)
