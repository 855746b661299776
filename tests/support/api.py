"""Small HTTP steps the API tests share."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]


def show_body(tickets: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dead_nation_id": str(uuid.uuid4()),
        "number_of_tickets": tickets,
        "start_time": "2026-12-31T20:00:00+01:00",
        "title": "The Hot Show",
        "venue": "Main Hall",
    }
    return body | overrides


async def create_show(client: Client, tickets: int) -> str:
    response = await client.post("/shows", json=show_body(tickets))
    assert response.status == 201, await response.text()
    return str((await response.json())["show_id"])


def booking_body(show_id: str, tickets: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "show_id": show_id,
        "number_of_tickets": tickets,
        "customer_email": "fan@example.com",
    }
    return body | overrides


async def book(client: Client, show_id: str, tickets: int) -> tuple[int, dict[str, Any]]:
    response = await client.post("/book-tickets", json=booking_body(show_id, tickets))
    return response.status, await response.json()
