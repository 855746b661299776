"""Every line of the HTTP contract, over real HTTP against a real database."""

from __future__ import annotations

import uuid

import asyncpg

from tests.support.api import Client, book, booking_body, create_show, show_body
from tests.support.invariants import assert_show_consistent


async def test_create_show_then_read_it(client: Client) -> None:
    body = show_body(10)
    created = await client.post("/shows", json=body)
    assert created.status == 201
    show_id = (await created.json())["show_id"]
    uuid.UUID(show_id)

    read = await client.get(f"/shows/{show_id}")
    assert read.status == 200
    show = await read.json()
    assert show["show_id"] == show_id
    assert show["dead_nation_id"] == body["dead_nation_id"]
    assert (show["title"], show["venue"], show["number_of_tickets"]) == (
        "The Hot Show",
        "Main Hall",
        10,
    )
    assert (show["tickets_booked"], show["tickets_available"]) == (0, 10)
    assert show["start_time"] == "2026-12-31T19:00:00+00:00"


async def test_same_dead_nation_id_returns_the_same_show(client: Client) -> None:
    body = show_body(10)
    first = await client.post("/shows", json=body)
    again = await client.post("/shows", json=body)
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["show_id"] == (await again.json())["show_id"]


async def test_show_with_no_tickets_is_allowed_and_sold_out(client: Client) -> None:
    show_id = await create_show(client, 0)
    assert await book(client, show_id, 1) == (400, {"error": "not enough seats available"})


async def test_book_and_read_the_booking(client: Client, db: asyncpg.Connection) -> None:
    show_id = await create_show(client, 5)
    response = await client.post("/book-tickets", json=booking_body(show_id, 2))
    assert response.status == 201
    booking_id = (await response.json())["booking_id"]

    read = await client.get(f"/bookings/{booking_id}")
    assert read.status == 200
    booking = await read.json()
    assert booking["booking_id"] == booking_id
    assert (booking["show_id"], booking["number_of_tickets"]) == (show_id, 2)
    assert booking["customer_email"] == "fan@example.com"

    show = await (await client.get(f"/shows/{show_id}")).json()
    assert (show["tickets_booked"], show["tickets_available"]) == (2, 3)
    assert await assert_show_consistent(db, show_id) == 2


async def test_outbox_row_holds_the_whole_event(client: Client, db: asyncpg.Connection) -> None:
    show_id = await create_show(client, 5)
    response = await client.post(
        "/book-tickets", json=booking_body(show_id, 3), headers={"Correlation-ID": "sale-42"}
    )
    booking_id = (await response.json())["booking_id"]
    row = await db.fetchrow("SELECT * FROM outbox WHERE payload->>'booking_id' = $1", booking_id)
    assert row["routing_key"] == "BookingMade"
    assert str(row["ordering_key"]) == show_id
    assert row["correlation_id"] == "sale-42"
    assert row["published_at"] is None
    import json

    payload = json.loads(row["payload"])
    assert payload["header"]["id"] == str(row["event_id"])
    assert payload["header"]["idempotency_key"] == booking_id
    assert payload["header"]["published_at"]
    assert payload["show_id"] == show_id
    assert (payload["number_of_tickets"], payload["customer_email"]) == (3, "fan@example.com")


async def test_not_enough_seats_writes_nothing(client: Client, db: asyncpg.Connection) -> None:
    show_id = await create_show(client, 3)
    assert (await book(client, show_id, 4)) == (400, {"error": "not enough seats available"})
    sid = uuid.UUID(show_id)
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", sid) == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE ordering_key = $1", sid) == 0
    assert await assert_show_consistent(db, show_id) == 0


async def test_last_tickets_can_be_sold(client: Client, db: asyncpg.Connection) -> None:
    show_id = await create_show(client, 3)
    assert (await book(client, show_id, 3))[0] == 201
    assert (await book(client, show_id, 1))[0] == 400
    assert await assert_show_consistent(db, show_id) == 3


async def test_unknown_show_is_404(client: Client) -> None:
    status, body = await book(client, str(uuid.uuid4()), 1)
    assert (status, body) == (404, {"error": "show not found"})
    assert (await client.get(f"/shows/{uuid.uuid4()}")).status == 404
    assert (await client.get("/shows/not-a-uuid")).status == 404


async def test_unknown_booking_is_404(client: Client) -> None:
    response = await client.get(f"/bookings/{uuid.uuid4()}")
    assert response.status == 404
    assert await response.json() == {"error": "booking not found"}
    assert (await client.get("/bookings/123")).status == 404


async def test_health_and_ready(client: Client) -> None:
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 200


async def test_correlation_id_is_kept_or_made(client: Client) -> None:
    kept = await client.get("/health", headers={"Correlation-ID": "abc-123"})
    assert kept.headers["Correlation-ID"] == "abc-123"
    made = await client.get("/health")
    assert made.headers["Correlation-ID"]
    # Not something to put in logs or on the broker as it is.
    unsafe = await client.get("/health", headers={"Correlation-ID": "x" * 500})
    assert unsafe.headers["Correlation-ID"] != "x" * 500


async def test_errors_carry_the_correlation_id(client: Client) -> None:
    response = await client.get(f"/bookings/{uuid.uuid4()}", headers={"Correlation-ID": "e-1"})
    assert response.headers["Correlation-ID"] == "e-1"


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    missing = await client.get("/nope")
    assert missing.status == 404
    assert "error" in await missing.json()
    wrong = await client.delete("/shows")
    assert wrong.status == 405
    assert "error" in await wrong.json()
