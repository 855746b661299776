"""Hostile bodies: each gets a 400 naming the field (or the body), never a 5xx, never a
traceback in the log, and nothing written."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support.api import Client, booking_body, create_show, show_body

DEEP = b"[" * 60_000
HUGE = "9" * 5_000  # Python's int() refuses strings past 4,300 digits; jiter says "out of range"


def raw_json(body: dict[str, Any], **raw_fields: str) -> bytes:
    """`body` as JSON with some fields' values given as raw JSON text (not encodable by json)."""
    text = json.dumps({key: value for key, value in body.items() if key not in raw_fields})
    extra = "".join(f', "{key}": {value}' for key, value in raw_fields.items())
    return (text[:-1] + extra + "}").encode()


async def post_raw(client: Client, path: str, raw: bytes, **headers: str) -> tuple[int, str]:
    response = await client.post(
        path, data=raw, headers={"Content-Type": "application/json", **headers}
    )
    return response.status, (await response.json())["error"]


SHOWS: list[tuple[str, bytes]] = [
    ("nested too deeply", DEEP),
    ("nested too deeply", raw_json(show_body(1), title="[" * 30_000 + "]" * 30_000)),
    ("title", json.dumps(show_body(1, title="New\u0000Year")).encode()),
    ("venue", json.dumps(show_body(1, venue="\u0000")).encode()),
    ("title", json.dumps(show_body(1, title="tab\there")).encode()),
    ("title", raw_json(show_body(1), title='"New \\ud800 Year"')),
    ("venue", raw_json(show_body(1), venue='"\\udfff"')),
    ("start_time", json.dumps(show_body(1, start_time="9999-12-31T23:00:00-05:00")).encode()),
    ("start_time", json.dumps(show_body(1, start_time="0001-01-01T00:30:00+01:00")).encode()),
    ("number_of_tickets", raw_json(show_body(1), number_of_tickets=HUGE)),
    ("number_of_tickets", raw_json(show_body(1), number_of_tickets="-" + HUGE)),
    ("number_of_tickets", raw_json(show_body(1), number_of_tickets="1e400")),
]


@pytest.mark.parametrize(("named", "raw"), SHOWS)
async def test_hostile_show_is_a_400_naming_the_field(
    client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture, named: str, raw: bytes
) -> None:
    before = await db.fetchval("SELECT count(*) FROM shows")
    with caplog.at_level(logging.INFO):
        status, error = await post_raw(client, "/shows", raw)
    assert (status, named in error) == (400, True), error
    assert await db.fetchval("SELECT count(*) FROM shows") == before
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_hostile_bookings_are_400s_naming_the_field(
    client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    show_id = await create_show(client, 5)
    cases = [
        ("nested too deeply", DEEP),
        ("number_of_tickets", raw_json(booking_body(show_id, 1), number_of_tickets=HUGE)),
        ("customer_email", raw_json(booking_body(show_id, 1), customer_email='"fan\\ud800@x.io"')),
        (
            "customer_email",
            json.dumps(booking_body(show_id, 1, customer_email="a\0@b.io")).encode(),
        ),
        ("show_id", raw_json(booking_body(show_id, 1), show_id='"\\udc00"')),
    ]
    with caplog.at_level(logging.INFO):
        for named, raw in cases:
            status, error = await post_raw(client, "/book-tickets", raw)
            assert (status, named in error) == (400, True), error
    sid = uuid.UUID(show_id)
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", sid) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("start_time", ["9999-12-31T23:59:59.999999+00:00", "0001-01-01T00:00:00Z"])
async def test_python_first_and_last_instants_are_refused(client: Client, start_time: str) -> None:
    # asyncpg would store them as PostgreSQL's infinity and -infinity.
    response = await client.post("/shows", json=show_body(1, start_time=start_time))
    assert response.status == 400
    assert "start_time" in (await response.json())["error"]


@pytest.mark.parametrize(
    "start_time", ["9999-12-31T23:59:59.999998+00:00", "0001-01-01T00:00:00.000001+00:00"]
)
async def test_the_outermost_storable_instants_are_stored_and_read_back(
    client: Client, start_time: str
) -> None:
    created = await client.post("/shows", json=show_body(1, start_time=start_time))
    assert created.status == 201, await created.text()
    show = await (await client.get(f"/shows/{(await created.json())['show_id']}")).json()
    assert show["start_time"] == start_time


@pytest.mark.parametrize(
    ("raw", "headers", "named"),
    [
        ('{"title": "caf\u00e9"}'.encode("utf-16"), {}, "not UTF-8"),
        ('{"title": "caf\u00e9"}'.encode("latin-1"), {}, "not UTF-8"),
        (b"{}", {"Content-Type": "application/json; charset=latin-1"}, "charset"),
        (b"{}", {"Content-Type": "text/plain"}, "Content-Type"),
        (b"{}", {"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type"),
        (b"{}", {"Content-Type": "multipart/form-data; boundary=x"}, "Content-Type"),
        (b"\x1f\x8b\x08\x00", {"Content-Encoding": "gzip"}, "Content-Encoding"),
    ],
)
async def test_wrong_encodings_and_content_types_are_400s(
    client: Client, raw: bytes, headers: dict[str, str], named: str
) -> None:
    for path in ("/shows", "/book-tickets"):
        status, error = await post_raw(client, path, raw, **headers)
        assert (status, named in error) == (400, True), error


async def test_charset_utf8_is_fine(client: Client) -> None:
    response = await client.post(
        "/shows",
        data=json.dumps(show_body(3)).encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert response.status == 201


async def test_a_body_announced_over_the_limit_is_refused_before_it_is_read(
    client: Client,
) -> None:
    # Announces 10 MB and sends 2 bytes: a 413 comes at once, not after waiting for the rest.
    response = await client.post(
        "/book-tickets",
        data=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": str(10 * 1024 * 1024)},
        skip_auto_headers=["Content-Length"],
    )
    assert response.status == 413
    assert "error" in await response.json()
