"""ticket_provider against a local fake provider: flaky, failing and refusing answers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from consumers.bootstrap import topology
from consumers.dlq import list_dead_letters
from consumers.retries import EXHAUSTED, REJECTED
from consumers.ticket_provider import delete_key
from consumers.topology import Topology
from service.domain import BookingEvent, BookingMade, cancellation_key
from service.settings import Settings
from tests.support.consumers import consumer_queues, depths, fast, running
from tests.support.database import asyncpg_dsn
from tests.support.events import (
    booking_made,
    canceled,
    insert_bookings,
    message_for,
    publish,
)
from tests.support.processes import environment, start
from tests.support.provider import FakeProvider, serving
from tests.support.waiting import until

NAME = "ticket_provider"


async def new_show(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """A show straight in the table; returns (show_id, dead_nation_id)."""
    show_id, dead_nation_id = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO shows (show_id, dead_nation_id, number_of_tickets, start_time, title, venue)"
        " VALUES ($1, $2, 1000, $3, 'Show', 'Hall')",
        show_id,
        dead_nation_id,
        datetime(2026, 12, 31, 20, tzinfo=UTC),
    )
    return show_id, dead_nation_id


@asynccontextmanager
async def against_provider(
    settings: Settings, name: str, provider: FakeProvider, **changes: object
) -> AsyncIterator[tuple[FakeProvider, Settings, Topology]]:
    """`provider` serving, settings of this test's own exchange (`name`) that point
    ticket_provider at it, and its queues declared: what every test here starts from."""
    async with serving(provider):
        own = fast(
            settings,
            events_exchange=f"{settings.events_exchange}.{name}",
            ticket_provider_url=provider.url,
            **changes,
        )
        async with consumer_queues(own, NAME) as (queues,):
            yield provider, own, queues


async def applied(db: asyncpg.Connection, events: Sequence[BookingEvent]) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = $1 AND message_id = ANY($2)",
            NAME,
            [e.event_id for e in events],
        )
    )


async def test_a_flaky_provider_gets_every_booking_exactly_once(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # 30 % of calls answer 500; 10 % book but answer only after the client gave up.
    async with against_provider(
        settings,
        "flaky",
        FakeProvider(failure_rate=0.3, hang_rate=0.1, hang_seconds=1.0),
        ticket_provider_timeout=0.3,
        consumer_max_attempts=20,  # 0.4 ** 20: no booking should run out of attempts
    ) as (provider, settings, queues):
        shows = dict([await new_show(db) for _ in range(3)])
        events = [booking_made(show_id, 1 + n % 3) for n in range(40) for show_id in shows]
        await insert_bookings(db, events)
        started = time.monotonic()
        await publish(settings, map(message_for, events))
        async with running(settings, [NAME]) as (runner,):

            async def all_applied() -> bool:
                return await applied(db, events) == len(events)

            await until(all_applied, within=45)
            drained = time.monotonic() - started
        assert set(provider.bookings_made) == {str(e.booking_id) for e in events}
        assert set(provider.bookings_made.values()) == {1}, "a booking was made twice"
        for event in events:
            calls = provider.calls_for(str(event.booking_id))
            # Every call for a booking, repeats included, carries its key and the same body.
            expected = {
                "booking_id": str(event.booking_id),
                "customer_address": event.customer_email,
                "event_id": str(shows[event.show_id]),
                "number_of_tickets": event.number_of_tickets,
            }
            assert {(c.idempotency_key, str(c.body)) for c in calls} == {
                (str(event.booking_id), str(expected))
            }
        assert runner.stats.dead_lettered == 0
        assert runner.stats.retried > 0
        assert runner.stats.applied == len(events)
        assert set((await depths(settings, queues)).values()) == {0}, "something is stuck"
    failed = sum(1 for c in provider.calls if c.status >= 500)
    print(
        f"\nflaky provider: {len(events)} bookings, {len(provider.calls)} calls answered"
        f" ({failed} with 500), {runner.stats.retried} retries; drained in {drained:.2f} s"
    )


async def test_a_failing_booking_is_dead_lettered_while_the_others_flow_then_redriven(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with against_provider(
        settings,
        "attempts",
        FakeProvider(),
        consumer_retry_delays_ms=(100, 200, 400),
        consumer_max_attempts=4,
    ) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        bad, *others = [booking_made(show_id) for _ in range(21)]
        await insert_bookings(db, [bad, *others])
        provider.failing.add(str(bad.booking_id))
        await publish(settings, map(message_for, [bad, *others]))  # the bad one first
        async with running(settings, [NAME]) as (runner,):

            async def others_applied() -> bool:
                return await applied(db, others) == len(others)

            await until(others_applied)
            assert runner.stats.dead_lettered == 0, "the others had to wait for the bad one"

            async def dead_lettered() -> bool:
                return runner.stats.dead_lettered == 1

            await until(dead_lettered)
            assert len(provider.calls_for(str(bad.booking_id))) == 4
            (dead,) = await list_dead_letters(settings.amqp_url.get_secret_value(), queues)
            assert (dead.message_id, dead.failure, dead.attempts, dead.consumer) == (
                str(bad.event_id),
                EXHAUSTED,
                4,
                NAME,
            )
            assert "HTTP 500" in dead.last_error
            env = environment(settings, TICKET_PROVIDER_URL=provider.url)
            listed = await cli(["consumers", "dlq", "list", NAME], env, tmp_path)
            assert f"{bad.event_id}  {EXHAUSTED} after 4 attempts" in listed
            assert "1 messages in" in listed

            provider.failing.clear()  # the provider is fixed; send the message round again
            assert "sent 1 messages" in await cli(
                ["consumers", "dlq", "redrive", NAME], env, tmp_path
            )

            async def bad_applied() -> bool:
                return await applied(db, [bad]) == 1

            await until(bad_applied)
        assert provider.bookings_made[str(bad.booking_id)] == 1
        assert set((await depths(settings, queues)).values()) == {0}


async def test_a_refused_booking_goes_to_the_dead_letter_queue_at_once(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with against_provider(
        settings,
        "refused",
        FakeProvider(),
    ) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        refused = booking_made(show_id)
        await insert_bookings(db, [refused])
        provider.refusing.add(str(refused.booking_id))
        await publish(settings, [message_for(refused)])
        async with running(settings, [NAME]) as (runner,):

            async def dead_lettered() -> bool:
                return runner.stats.dead_lettered == 1

            await until(dead_lettered)
        (dead,) = await list_dead_letters(settings.amqp_url.get_secret_value(), queues)
        assert (dead.failure, dead.attempts) == (REJECTED, 1)
        assert "HTTP 400" in dead.last_error
        assert len(provider.calls) == 1 and runner.stats.retried == 0
        assert topology(settings, NAME).dead_letter == queues.dead_letter


async def cli(args: list[str], env: dict[str, str], log_dir: Path) -> str:
    """Run `python -m <args>` to its end; its output."""
    child = await start(args[0] + "-" + "-".join(args[1:]), args, env, log_dir)
    async with asyncio.timeout(20):
        code = await child.process.wait()
    assert code == 0, child.output()
    return child.output()


async def test_a_stop_lets_the_calls_in_flight_finish(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # every call takes half a second
    async with against_provider(
        settings,
        "stop",
        FakeProvider(hang_rate=1.0, hang_seconds=0.5),
        ticket_provider_timeout=5.0,
    ) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        events = [booking_made(show_id) for _ in range(5)]
        await insert_bookings(db, events)
        await publish(settings, map(message_for, events))
        async with running(settings, [NAME]) as (runner,):

            async def all_in_flight() -> bool:
                return provider.received == len(events)

            await until(all_in_flight)
            # Leaving the block stops the runner while all five calls are in flight.
        assert runner.stats.applied == len(events)
        assert await applied(db, events) == len(events)
        assert set((await depths(settings, queues)).values()) == {0}
    assert len(provider.calls) == len(events)  # no call repeated after the stop


async def cancel_in_table(db: asyncpg.Connection, event: BookingMade) -> None:
    """What DELETE /bookings/{id} commits, as far as ticket_provider reads it."""
    await db.execute(
        "UPDATE bookings SET status = 'canceled', canceled_at = now() WHERE booking_id = $1",
        event.booking_id,
    )


def calls(provider: FakeProvider, event: BookingMade) -> list[tuple[str, str | None, int]]:
    return [
        (c.method, c.idempotency_key, c.status) for c in provider.calls_for(str(event.booking_id))
    ]


async def test_a_cancellation_deletes_the_ticket_with_a_key_of_its_own(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with against_provider(settings, "cancel", FakeProvider()) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        kept, undone = booking_made(show_id), booking_made(show_id, 2)
        await insert_bookings(db, [kept, undone])
        await publish(settings, map(message_for, [kept, undone]))
        async with running(settings, [NAME]) as (runner,):
            await until(lambda: _applied_all(db, [kept, undone]))
            await cancel_in_table(db, undone)
            undo = canceled(undone)
            await publish(settings, [message_for(undo)])
            await until(lambda: _applied_all(db, [undo]))
            await publish(settings, [message_for(undo)])  # delivered again: no call
            await until(lambda: stat_reached(lambda: runner.stats.duplicates, 1))
        assert set(provider.live) == {str(kept.booking_id)}
        key = str(cancellation_key(undone.booking_id))
        assert calls(provider, undone) == [
            ("POST", str(undone.booking_id), 201),
            ("DELETE", key, 200),
        ]
        assert set((await depths(settings, queues)).values()) == {0}


async def test_a_cancellation_that_overtakes_its_booking_leaves_no_ticket(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with against_provider(
        settings,
        "overtaken",
        FakeProvider(),
        consumer_max_attempts=2,
    ) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        late = booking_made(show_id)
        await insert_bookings(db, [late])
        provider.failing.add(str(late.booking_id))  # its BookingMade ends dead-lettered
        await publish(settings, [message_for(late)])
        async with running(settings, [NAME]) as (runner,):
            await until(lambda: stat_reached(lambda: runner.stats.dead_lettered, 1))
            # The booking is canceled; its BookingCanceled is applied first (nothing to
            # delete yet)...
            provider.failing.clear()
            await cancel_in_table(db, late)
            undo = canceled(late)
            await publish(settings, [message_for(undo)])
            await until(lambda: _applied_all(db, [undo]))
            # ...then the BookingMade is redriven: no ticket for a canceled booking.
            env = environment(settings, TICKET_PROVIDER_URL=provider.url)
            assert "sent 1 messages" in await cli(
                ["consumers", "dlq", "redrive", NAME], env, tmp_path
            )
            await until(lambda: _applied_all(db, [late]))
        assert provider.live == {}
        assert [c for c in calls(provider, late) if c[0] == "POST"] == [
            ("POST", str(late.booking_id), 500),
            ("POST", str(late.booking_id), 500),
        ]
        assert set((await depths(settings, queues)).values()) == {0}


async def test_a_booking_canceled_while_its_ticket_is_made_gets_it_taken_back(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with against_provider(
        settings,
        "meanwhile",
        FakeProvider(),
    ) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        event = booking_made(show_id)
        await insert_bookings(db, [event])
        undo = canceled(event)

        async def canceled_meanwhile(booking_id: str) -> None:
            # While the POST is on its way, the booking is canceled and its BookingCanceled
            # reaches the provider first: its DELETE finds no ticket yet. (On a connection
            # of its own: the test's is busy polling meanwhile.)
            own = await asyncpg.connect(asyncpg_dsn(settings.database_url.get_secret_value()))
            try:
                await cancel_in_table(own, event)
            finally:
                await own.close()
            await publish(settings, [message_for(undo)])

            async def deleted() -> bool:
                return any(c.method == "DELETE" for c in provider.calls_for(booking_id))

            await until(deleted)

        provider.before_booking = canceled_meanwhile
        await publish(settings, [message_for(event)])
        async with running(settings, [NAME]):
            await until(lambda: _applied_all(db, [event, undo]))
        assert provider.live == {}
        assert calls(provider, event) == [
            ("DELETE", str(cancellation_key(event.booking_id)), 404),
            ("POST", str(event.booking_id), 201),
            ("DELETE", str(delete_key(event)), 200),  # the consumer takes it back
        ]
        assert set((await depths(settings, queues)).values()) == {0}


async def test_forged_events_are_dead_lettered_without_a_call(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with against_provider(settings, "forged", FakeProvider()) as (provider, settings, queues):
        show_id, _ = await new_show(db)
        nobody, real = booking_made(show_id), booking_made(show_id, 2)
        await insert_bookings(db, [real])
        inflated = dataclasses.replace(real, event_id=uuid.uuid4(), number_of_tickets=200)
        not_canceled = canceled(real)
        forged = [nobody, inflated, not_canceled]
        await publish(settings, map(message_for, forged))
        async with running(settings, [NAME]) as (runner,):
            await until(lambda: stat_reached(lambda: runner.stats.dead_lettered, 3))
        dead = await list_dead_letters(settings.amqp_url.get_secret_value(), queues)
        assert {(d.message_id, d.failure) for d in dead} == {
            (str(e.event_id), REJECTED) for e in forged
        }
        assert all("forged event" in d.last_error for d in dead)
        assert provider.received == 0


async def _applied_all(db: asyncpg.Connection, events: Sequence[BookingEvent]) -> bool:
    return await applied(db, events) == len(events)


async def stat_reached(stat: Callable[[], int], count: int) -> bool:
    return stat() >= count
