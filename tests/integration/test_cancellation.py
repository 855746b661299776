"""DELETE /bookings/{id}, over real HTTP against the real database."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.api.state import BOOKER
from service.coalescer import BookingCoalescer
from service.common.metrics import exposition
from service.events import BookingCanceledBody
from service.settings import Settings
from tests.support.api import Client, book, booking_body, create_show
from tests.support.invariants import assert_show_consistent
from tests.support.metrics import sample
from tests.support.row_locks import show_row_locked, until_waiting_for_lock
from tests.support.waiting import until

BOUND = 20.0


def cancellations_counted() -> float:
    return sample(exposition()[0].decode(), "tickets_cancellations_total")


async def show_counts(client: Client, show_id: str) -> tuple[int, int]:
    show = await (await client.get(f"/shows/{show_id}")).json()
    return show["tickets_booked"], show["tickets_available"]


async def events_of(db: asyncpg.Connection, booking_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT routing_key, payload, correlation_id FROM outbox"
            " WHERE payload->>'booking_id' = $1 ORDER BY id",
            booking_id,
        )
    )


async def test_cancel_returns_the_tickets_once_and_they_can_be_booked_again(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 3)
    status, answer = await book(client, show_id, 2)
    assert status == 201
    booking_id = answer["booking_id"]
    assert (await book(client, show_id, 1))[0] == 201
    assert await book(client, show_id, 2) == (400, {"error": "not enough seats available"})

    counted = cancellations_counted()
    canceled = await client.delete(f"/bookings/{booking_id}", headers={"Correlation-ID": "undo"})
    assert canceled.status == 200
    body = await canceled.json()
    assert (body["booking_id"], body["status"], body["number_of_tickets"]) == (
        booking_id,
        "canceled",
        2,
    )
    assert body["canceled_at"] is not None
    assert await (await client.get(f"/bookings/{booking_id}")).json() == body
    assert await show_counts(client, show_id) == (1, 2)

    made, undone = await events_of(db, booking_id)
    assert (made["routing_key"], undone["routing_key"]) == ("BookingMade", "BookingCanceled")
    made_body, undone_body = json.loads(made["payload"]), json.loads(undone["payload"])
    assert {k: v for k, v in undone_body.items() if k != "header"} == {
        k: v for k, v in made_body.items() if k != "header"
    }
    assert undone_body["header"]["id"] != made_body["header"]["id"]
    BookingCanceledBody.model_validate_json(undone["payload"])  # the contract (asyncapi)
    assert undone["correlation_id"] == "undo"

    # Again: the same answer, and nothing changes.
    again = await client.delete(f"/bookings/{booking_id}")
    assert (again.status, await again.json()) == (200, body)
    assert len(await events_of(db, booking_id)) == 2
    assert await show_counts(client, show_id) == (1, 2)
    assert cancellations_counted() - counted == 1  # the repeat is not a cancellation

    # The released seats are for sale again.
    assert (await book(client, show_id, 2))[0] == 201
    assert await show_counts(client, show_id) == (3, 0)
    assert await assert_show_consistent(db, show_id) == 3


async def test_an_unknown_or_malformed_booking_is_not_found(client: Client) -> None:
    for booking_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = await client.delete(f"/bookings/{booking_id}")
        assert (response.status, await response.json()) == (404, {"error": "booking not found"})


async def test_cancellations_share_the_bookings_batch_in_arrival_order(
    client: Client, db: asyncpg.Connection, database_url: str
) -> None:
    show_id = await create_show(client, 2)
    _, held = await book(client, show_id, 1)
    booker = client.app[BOOKER]
    assert isinstance(booker, BookingCoalescer)
    async with asyncio.timeout(BOUND):
        async with show_row_locked(db, show_id):
            # The first batch takes the last seat (held on the row lock)...
            first = asyncio.create_task(client.post("/book-tickets", json=booking_body(show_id, 1)))
            await until_waiting_for_lock(database_url)
            # ...behind it, in this order: a booking, the cancellation, another booking.
            before = asyncio.create_task(
                client.post("/book-tickets", json=booking_body(show_id, 1))
            )
            await until(lambda: _queued(booker, show_id, 1))
            cancel = asyncio.create_task(client.delete(f"/bookings/{held['booking_id']}"))
            await until(lambda: _queued(booker, show_id, 2))
            after = asyncio.create_task(client.post("/book-tickets", json=booking_body(show_id, 1)))
            await until(lambda: _queued(booker, show_id, 3))
        answers = [await task for task in (first, before, cancel, after)]
    # One by one: the show is full for the first booking behind; the cancellation frees a seat
    # for the booking after it. All three were one transaction.
    assert [a.status for a in answers] == [201, 400, 200, 201]
    assert await assert_show_consistent(db, show_id) == 2


async def _queued(booker: BookingCoalescer, show_id: str, count: int) -> bool:
    return booker.queued(uuid.UUID(show_id)) == count


async def test_concurrent_cancellations_of_one_booking_write_one_event(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # One transaction per request: the cancellations meet in the database, on the booking row.
    apart = settings.replaced(booking_coalescing=False)
    async with TestClient(TestServer(create_app(apart))) as client:
        show_id = await create_show(client, 10)
        bookings = [(await book(client, show_id, 2))[1]["booking_id"] for _ in range(3)]
        async with asyncio.timeout(BOUND):
            answers = await asyncio.gather(
                *(client.delete(f"/bookings/{bookings[n % 2]}") for n in range(20))
            )
        assert [a.status for a in answers] == [200] * 20
        bodies = [await a.json() for a in answers]
        for n in range(2):
            assert len({json.dumps(b) for b in bodies[n::2]}) == 1
            assert [e["routing_key"] for e in await events_of(db, bookings[n])] == [
                "BookingMade",
                "BookingCanceled",
            ]
        assert await show_counts(client, show_id) == (2, 8)
    assert await assert_show_consistent(db, show_id) == 2
