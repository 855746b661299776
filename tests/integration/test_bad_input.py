"""Bad input never becomes a 500 or a half-written booking: each gets a clear 4xx."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.support.api import Client, booking_body, create_show, show_body

BAD_BOOKINGS: list[tuple[str, dict[str, Any]]] = [
    ("number_of_tickets", {"number_of_tickets": 0}),
    ("number_of_tickets", {"number_of_tickets": -1}),
    ("number_of_tickets", {"number_of_tickets": 1.5}),
    ("number_of_tickets", {"number_of_tickets": 2.0}),
    ("number_of_tickets", {"number_of_tickets": "2"}),
    ("number_of_tickets", {"number_of_tickets": True}),
    ("number_of_tickets", {"number_of_tickets": None}),
    ("number_of_tickets", {"number_of_tickets": 10**30}),
    ("show_id", {"show_id": "not-a-uuid"}),
    ("show_id", {"show_id": 12}),
    ("customer_email", {"customer_email": "not-an-email"}),
    ("customer_email", {"customer_email": "a@b"}),
    ("customer_email", {"customer_email": "x" * 300 + "@example.com"}),
    ("customer_email", {"customer_email": 5}),
]


@pytest.mark.parametrize(("field", "change"), BAD_BOOKINGS)
async def test_invalid_booking_field(
    client: Client, db: asyncpg.Connection, field: str, change: dict[str, Any]
) -> None:
    show_id = await create_show(client, 5)
    response = await client.post("/book-tickets", json=booking_body(show_id, 1) | change)
    assert response.status == 400
    assert field in (await response.json())["error"]
    assert (
        await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", uuid.UUID(show_id))
        == 0
    )


@pytest.mark.parametrize("missing", ["show_id", "number_of_tickets", "customer_email"])
async def test_missing_booking_field(client: Client, missing: str) -> None:
    body = booking_body(str(uuid.uuid4()), 1)
    del body[missing]
    response = await client.post("/book-tickets", json=body)
    assert response.status == 400
    assert missing in (await response.json())["error"]


async def test_more_tickets_than_any_show_has(client: Client) -> None:
    show_id = await create_show(client, 5)
    response = await client.post("/book-tickets", json=booking_body(show_id, 2**31 - 1))
    assert (response.status, await response.json()) == (
        400,
        {"error": "not enough seats available"},
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"null", "JSON object"),
    ],
)
async def test_malformed_body(client: Client, raw: bytes, message: str) -> None:
    for path in ("/book-tickets", "/shows"):
        response = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert message in (await response.json())["error"]


async def test_wrong_content_type(client: Client) -> None:
    response = await client.post("/book-tickets", data=b"show_id=1")
    assert response.status == 400
    assert "application/json" in (await response.json())["error"]


async def test_body_over_64_kib(client: Client) -> None:
    body = booking_body(str(uuid.uuid4()), 1, padding="x" * (65 * 1024))
    response = await client.post("/book-tickets", json=body)
    assert response.status == 413
    assert "error" in await response.json()


BAD_SHOWS: list[tuple[str, dict[str, Any]]] = [
    ("dead_nation_id", {"dead_nation_id": "nope"}),
    ("number_of_tickets", {"number_of_tickets": -1}),
    ("number_of_tickets", {"number_of_tickets": 1.5}),
    ("number_of_tickets", {"number_of_tickets": "10"}),
    ("number_of_tickets", {"number_of_tickets": False}),
    ("number_of_tickets", {"number_of_tickets": 2**31}),
    ("start_time", {"start_time": "tomorrow"}),
    ("start_time", {"start_time": "2026-12-31T20:00:00"}),  # no offset: which 20:00?
    ("start_time", {"start_time": 1700000000}),
    ("title", {"title": ""}),
    ("title", {"title": "t" * 201}),
    ("venue", {"venue": None}),
    ("venue", {"venue": "v" * 10_000}),
]


@pytest.mark.parametrize(("field", "change"), BAD_SHOWS)
async def test_invalid_show(client: Client, field: str, change: dict[str, Any]) -> None:
    response = await client.post("/shows", json=show_body(10) | change)
    assert response.status == 400
    assert field in (await response.json())["error"]
