"""The contract's details, to the byte: the bodies of the probes and of every 404, the Allow
header of a 405, and the 64 KiB body limit on both POST routes, at its boundary."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.api import Client, booking_body, create_show, show_body

LIMIT = 64 * 1024


async def test_probe_bodies(client: Client) -> None:
    health = await client.get("/health")
    assert health.status == 200
    body = await health.json()
    assert body["status"] == "ok" and isinstance(body["pid"], int)
    ready = await client.get("/ready")
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})


@pytest.mark.parametrize(
    ("path", "error"),
    [
        (f"/shows/{uuid.uuid4()}", "show not found"),
        ("/shows/not-a-uuid", "show not found"),
        (f"/bookings/{uuid.uuid4()}", "booking not found"),
        ("/bookings/123", "booking not found"),
    ],
)
async def test_each_404_says_what_was_not_found(client: Client, path: str, error: str) -> None:
    response = await client.get(path)
    assert (response.status, await response.json()) == (404, {"error": error})


async def test_an_unknown_route_is_a_json_404(client: Client) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert set(await response.json()) == {"error"}


async def test_a_wrong_method_is_405_with_the_allowed_ones(client: Client) -> None:
    response = await client.delete("/shows")
    assert response.status == 405
    assert set(await response.json()) == {"error"}
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"POST"}


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON of exactly `size` bytes, grown by a field the API ignores."""
    base = json.dumps(body | {"padding": ""}).encode()
    return json.dumps(body | {"padding": "x" * (size - len(base))}).encode()


@pytest.mark.parametrize("route", ["/shows", "/book-tickets"])
async def test_the_body_limit_is_64_kib_to_the_byte(client: Client, route: str) -> None:
    show_id = await create_show(client, 5)
    body = show_body(5) if route == "/shows" else booking_body(show_id, 1)
    headers = {"Content-Type": "application/json"}
    at_limit = await client.post(route, data=padded(body, LIMIT), headers=headers)
    assert at_limit.status == 201, await at_limit.text()
    over = await client.post(route, data=padded(body, LIMIT + 1), headers=headers)
    assert over.status == 413
    assert set(await over.json()) == {"error"}
