"""POST /book-tickets with an Idempotency-Key, over real HTTP against the real database."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.api.state import BOOKER
from service.coalescer import BookingCoalescer
from service.common.metrics import exposition
from service.db.idempotency_keys import purge_expired_keys
from service.relay.purge import Purge, Retention, retentions
from service.settings import Settings
from tests.support.api import Client, booking_body, create_show
from tests.support.invariants import assert_show_consistent
from tests.support.metrics import sample
from tests.support.row_locks import show_row_locked, until_waiting_for_lock
from tests.support.waiting import until

BOUND = 20.0
REPLAYED = "Idempotent-Replayed"


async def post(client: Client, key: str, body: Any) -> aiohttp.ClientResponse:
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    return await client.post("/book-tickets", data=data, headers=headers)


async def stored(db: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM idempotency_keys WHERE key = $1", key)


async def bookings_of(db: asyncpg.Connection, show_id: str) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", uuid.UUID(show_id))
    )


def accepted_bookings() -> float:
    return sample(exposition()[0].decode(), "tickets_bookings_total", outcome="accepted")


async def test_a_repeat_gets_the_stored_answer_and_books_nothing(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 10)
    key, body = str(uuid.uuid4()), booking_body(show_id, 2)
    accepted_before = accepted_bookings()
    first = await post(client, key, body)
    assert first.status == 201 and REPLAYED not in first.headers
    answer = await first.json()
    # Key order, spacing and unknown fields do not make another request.
    reordered = json.dumps(dict(reversed(list(body.items()))) | {"note": "x"}, indent=2)
    for again in (body, reordered):
        repeat = await post(client, key, again)
        assert (repeat.status, await repeat.json()) == (201, answer)
        assert repeat.headers[REPLAYED] == "true"
        assert repeat.content_type == "application/json"
    assert await bookings_of(db, show_id) == 1
    assert accepted_bookings() - accepted_before == 1  # a replay is not a booking
    assert await assert_show_consistent(db, show_id) == 2
    row = await stored(db, key)
    assert row is not None
    assert (row["status"], json.loads(row["body"])) == (201, answer)
    assert str(row["booking_id"]) == answer["booking_id"]


async def test_the_key_with_another_body_is_refused_and_books_nothing(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 10)
    key = "order-7/attempt:1"
    first = await post(client, key, booking_body(show_id, 2))
    assert first.status == 201
    for other in (booking_body(show_id, 3), booking_body(show_id, 2, customer_email="b@c.de")):
        refused = await post(client, key, other)
        assert refused.status == 422
        assert await refused.json() == {
            "error": "this Idempotency-Key was already used with a different request body"
        }
    again = await post(client, key, booking_body(show_id, 2))
    assert (again.status, await again.json()) == (201, await first.json())
    assert await bookings_of(db, show_id) == 1


async def test_a_refusal_is_stored_and_replayed_even_once_seats_are_free(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 1)
    taken = await client.post("/book-tickets", json=booking_body(show_id, 1))
    key = str(uuid.uuid4())
    refused = await post(client, key, booking_body(show_id, 1))
    assert (refused.status, await refused.json()) == (400, {"error": "not enough seats available"})
    booking_id = (await taken.json())["booking_id"]
    assert (await client.delete(f"/bookings/{booking_id}")).status == 200
    # The seat is free again, but this key's answer was given: the repeat gets it again.
    repeat = await post(client, key, booking_body(show_id, 1))
    assert (repeat.status, await repeat.json()) == (400, {"error": "not enough seats available"})
    assert repeat.headers[REPLAYED] == "true"
    fresh = await post(client, str(uuid.uuid4()), booking_body(show_id, 1))
    assert fresh.status == 201
    assert await assert_show_consistent(db, show_id) == 1


async def test_an_unknown_show_is_stored_as_404(client: Client, db: asyncpg.Connection) -> None:
    key, body = str(uuid.uuid4()), booking_body(str(uuid.uuid4()), 1)
    first = await post(client, key, body)
    repeat = await post(client, key, body)
    assert [first.status, repeat.status] == [404, 404]
    assert await repeat.json() == {"error": "show not found"}
    assert (REPLAYED in first.headers, repeat.headers.get(REPLAYED)) == (False, "true")
    row = await stored(db, key)
    assert row is not None and (row["status"], row["booking_id"]) == (404, None)


@pytest.mark.parametrize(
    "key", [b"", b" ", b"a" * 256, "cl\u00e9".encode(), b"with space", b"tab\there"]
)
async def test_malformed_keys_are_refused(
    client: Client, db: asyncpg.Connection, key: bytes
) -> None:
    show_id = await create_show(client, 10)
    # Raw bytes: aiohttp's client would refuse to send some of these keys at all.
    body = json.dumps(booking_body(show_id, 1)).encode()
    head = (
        b"POST /book-tickets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nIdempotency-Key: " + key + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + body)
    answer = await asyncio.wait_for(reader.read(), BOUND)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert await bookings_of(db, show_id) == 0


async def test_the_widest_keys_are_taken_and_two_keys_are_not(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 10)
    for key in ("a" * 255, "!", "~" * 3):
        assert (await post(client, key, booking_body(show_id, 1))).status == 201
    twice = await client.post(
        "/book-tickets",
        json=booking_body(show_id, 1),
        headers=[("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
    )
    assert twice.status == 400
    assert await bookings_of(db, show_id) == 3


async def test_a_busy_answer_is_not_stored(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    impatient = settings.replaced(booking_max_wait=0.3)
    async with TestClient(TestServer(create_app(impatient))) as client:
        show_id = await create_show(client, 10)
        key = str(uuid.uuid4())
        async with asyncio.timeout(BOUND):
            async with show_row_locked(db, show_id):
                busy = await post(client, key, booking_body(show_id, 1))
                assert busy.status == 503
            assert await stored(db, key) is None
            # The client retries with the same key: processed now, not a replay of the 503.
            retried = await post(client, key, booking_body(show_id, 1))
            assert retried.status == 201 and REPLAYED not in retried.headers
    assert await assert_show_consistent(db, show_id) == 1


async def test_requests_with_one_key_in_one_batch_book_once(
    client: Client, db: asyncpg.Connection, database_url: str
) -> None:
    show_id = await create_show(client, 10)
    booker = client.app[BOOKER]
    assert isinstance(booker, BookingCoalescer)
    key = str(uuid.uuid4())
    async with asyncio.timeout(BOUND):
        async with show_row_locked(db, show_id):
            blocked = asyncio.create_task(post(client, str(uuid.uuid4()), booking_body(show_id, 1)))
            await until_waiting_for_lock(database_url)
            bodies = [booking_body(show_id, 2)] * 3 + [booking_body(show_id, 5)]
            same_batch = [asyncio.create_task(post(client, key, body)) for body in bodies]

            async def all_queued() -> bool:
                return booker.queued(uuid.UUID(show_id)) == len(bodies)

            await until(all_queued)
        assert (await blocked).status == 201
        answers = await asyncio.gather(*same_batch)
    assert [a.status for a in answers] == [201, 201, 201, 422]
    ids = {(await a.json())["booking_id"] for a in answers[:3]}
    assert len(ids) == 1
    assert [a.headers.get(REPLAYED) for a in answers[:3]] == [None, "true", "true"]
    assert await bookings_of(db, show_id) == 2
    assert await assert_show_consistent(db, show_id) == 3


async def test_concurrent_requests_with_one_key_book_once_without_coalescing(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # One transaction per request: they meet in the database, on the key's unique index.
    apart = settings.replaced(booking_coalescing=False)
    async with TestClient(TestServer(create_app(apart))) as client:
        show_id = await create_show(client, 100)
        key = str(uuid.uuid4())
        async with asyncio.timeout(BOUND):
            answers = await asyncio.gather(
                *(post(client, key, booking_body(show_id, 3)) for _ in range(20))
            )
        assert [a.status for a in answers] == [201] * 20
        assert len({(await a.json())["booking_id"] for a in answers}) == 1
        assert sum(REPLAYED in a.headers for a in answers) == 19
    assert await bookings_of(db, show_id) == 1
    assert await assert_show_consistent(db, show_id) == 3


async def test_an_expired_key_is_a_new_key_and_expired_keys_are_purged(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 10)
    key = str(uuid.uuid4())
    assert (await post(client, key, booking_body(show_id, 1))).status == 201
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = $1", key
    )
    # Past IDEMPOTENCY_KEY_TTL (a day) the key is free again, even before the purge ran.
    reused = await post(client, key, booking_body(show_id, 4))
    assert reused.status == 201 and REPLAYED not in reused.headers
    row = await stored(db, key)
    assert row is not None and str(row["booking_id"]) == (await reused.json())["booking_id"]
    assert await assert_show_consistent(db, show_id) == 5

    old = [f"old-{n}-{uuid.uuid4()}" for n in range(25)]
    await db.executemany(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)"
        " VALUES ($1, 'f', 400, '{}', now() - interval '2 days')",
        [(k,) for k in old],
    )
    assert await purge_expired_keys(db, older_than=86_400, limit=10) == 10
    assert await purge_expired_keys(db, older_than=86_400, limit=100) == 15
    assert await stored(db, key) is not None  # a fresh key stays


async def test_the_purge_runs_on_its_own_and_survives_a_failing_round(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await db.execute(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)"
        " VALUES ($1, 'f', 400, '{}', now() - interval '1 hour')",
        f"purge-{uuid.uuid4()}",
    )
    failures = 0

    async def failing_once(conn: asyncpg.Connection, older_than: float, limit: int) -> int:
        nonlocal failures
        failures += 1
        if failures == 1:
            raise RuntimeError("a bug in one round")
        return 0

    kept = [Retention("flaky rows", 1, failing_once), *retentions(86_400, 60)]
    stopping = asyncio.Event()
    purge = asyncio.create_task(Purge(database_url, kept, 0.05, stopping).run())

    async def purged() -> bool:
        left = await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '1 minute'"
        )
        return failures >= 2 and left == 0

    with caplog.at_level(logging.INFO, logger="service.relay.purge"):
        await until(purged, within=BOUND)
        stopping.set()
        await asyncio.wait_for(purge, BOUND)
    assert "purge failed unexpectedly" in caplog.text
    assert "expired idempotency keys" in caplog.text
