"""A COMMIT whose answer is lost, and a connection lost before it: the API finds out what
happened and answers truthfully (through the PostgreSQL proxy of tests/support/proxy.py).

- the answer to a COMMIT cut (the server committed): 201, the booking exists, once;
- the connection cut as the COMMIT leaves (the server rolled back): the batch runs again on a
  fresh connection, 201, one booking;
- many COMMIT answers lost under concurrent requests: no 5xx for a booking that was made, every
  201 is a booking, and the table agrees with the outbox;
- a COMMIT answer lost and the database unreachable since: 503 that names the booking and says
  it may exist (never "retry"); once the database is back, GET /bookings/{id} finds it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import make_url

from service.api import create_app
from service.api.state import BOOKER
from service.coalescer import BookingCoalescer
from service.settings import Settings
from tests.support.api import booking_body, create_show
from tests.support.invariants import assert_show_consistent
from tests.support.proxy import Link, PostgresProxy
from tests.support.waiting import until

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def client(proxied_client: Client) -> Client:
    """Here every request goes to the API whose database is behind the proxy."""
    return proxied_client


async def book(client: Client, show_id: str) -> tuple[int, dict[str, str]]:
    response = await client.post("/book-tickets", json=booking_body(show_id, 1))
    return response.status, await response.json()


async def in_waves(client: Client, shows: list[str]) -> list[tuple[int, dict[str, str]]]:
    """160 requests, 20 at a time: at least one booking transaction (one COMMIT) per wave."""
    answers = []
    for _ in range(8):
        answers += await asyncio.gather(*(book(client, shows[n % 4]) for n in range(20)))
    return answers


async def bookings_of(db: asyncpg.Connection, show_id: str) -> set[str]:
    rows = await db.fetch("SELECT booking_id FROM bookings WHERE show_id = $1", uuid.UUID(show_id))
    return {str(row["booking_id"]) for row in rows}


async def test_a_commit_whose_answer_is_lost_is_a_201_for_the_booking_it_made(
    client: Client, proxy: PostgresProxy, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 10)
    proxy.cut_after_commit()
    status, body = await book(client, show_id)
    assert (proxy.seen.commits_cut, status) == (1, 201), body
    assert await bookings_of(db, show_id) == {body["booking_id"]}
    assert await assert_show_consistent(db, show_id) == 1
    # What it took: the lookup's fence on the show, then the booking ids.
    assert any("FOR SHARE" in sql for sql in proxy.seen.statements)


async def test_a_connection_lost_before_its_commit_is_booked_again_on_a_fresh_one(
    client: Client, proxy: PostgresProxy, db: asyncpg.Connection
) -> None:
    show_id = await create_show(client, 10)
    proxy.cut_before_commit()  # the server rolls the transaction back
    status, body = await book(client, show_id)
    assert (proxy.seen.commits_cut, status) == (1, 201), body
    assert await bookings_of(db, show_id) == {body["booking_id"]}
    assert await assert_show_consistent(db, show_id) == 1


async def test_lost_commit_answers_under_load_never_deny_a_booking_that_was_made(
    client: Client, proxy: PostgresProxy, db: asyncpg.Connection
) -> None:
    shows = [await create_show(client, 1_000) for _ in range(4)]
    proxy.cut_after_commit(times=8)
    answers = await in_waves(client, shows)
    statuses = Counter(status for status, _ in answers)
    assert proxy.seen.commits_cut == 8
    assert set(statuses) == {201}, statuses  # every lost COMMIT had committed: all found
    made = set().union(*[await bookings_of(db, show_id) for show_id in shows])
    assert made == {body["booking_id"] for _, body in answers}
    for show_id in shows:
        await assert_show_consistent(db, show_id)


async def test_lost_connections_before_commits_under_load_book_each_request_once(
    client: Client, proxy: PostgresProxy, db: asyncpg.Connection
) -> None:
    shows = [await create_show(client, 1_000) for _ in range(4)]
    proxy.cut_before_commit(times=8)
    answers = await in_waves(client, shows)
    statuses = Counter(status for status, _ in answers)
    assert proxy.seen.commits_cut == 8
    assert set(statuses) == {201}, statuses  # rolled back, then booked on a fresh connection
    made = set().union(*[await bookings_of(db, show_id) for show_id in shows])
    assert made == {body["booking_id"] for _, body in answers}
    assert len(made) == 160
    for show_id in shows:
        await assert_show_consistent(db, show_id)


class GoneAfterCommit(PostgresProxy):
    """Loses the answer to the next COMMIT, and from that moment refuses new connections: the
    database is unreachable before anyone can ask it what happened."""

    refused_once = False

    def _answer(self, link: Link, data: bytes) -> bytes:
        forwarded = super()._answer(link, data)
        if self.seen.commits_cut and not self.refused_once:
            self.refused_once = True
            self.refuse()
        return forwarded


async def test_a_lost_commit_that_cannot_be_looked_up_is_unknown_never_retry(
    settings: Settings, database_url: str, db: asyncpg.Connection
) -> None:
    url = make_url(database_url)
    proxy = GoneAfterCommit(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = settings.replaced(
        database_url=url.set(port=proxy.port).render_as_string(hide_password=False)
    )
    try:
        async with TestClient(TestServer(create_app(proxied))) as client:
            show_id = await create_show(client, 10)
            proxy.cut_after_commit()
            response = await client.post("/book-tickets", json=booking_body(show_id, 1))
            body = await response.json()
            assert proxy.seen.commits_cut == 1
            (made,) = await bookings_of(db, show_id)  # it committed
            assert response.status == 503
            assert body == {
                "error": "the database stopped answering while this was being committed, and"
                f" could not be asked since: it may have been done; GET /bookings/{made} tells"
            }
            proxy.heal()
            found = await client.get(f"/bookings/{made}")
            assert found.status == 200
    finally:
        await proxy.close()


async def test_a_lost_commit_of_a_batch_of_bookings_keys_and_a_cancellation(
    client: Client, proxy: PostgresProxy, db: asyncpg.Connection
) -> None:
    """One batch books without a key, books with an Idempotency-Key and cancels a booking; its
    COMMIT's answer is lost. The bookings are found (201); the rest runs again, which finds the
    cancellation done (200, the same as a repeat) and the key's answer stored."""
    show_id = await create_show(client, 10)
    _, existing = await book(client, show_id)
    keyed = {"Idempotency-Key": f"lost-{uuid.uuid4()}"}
    async with db.transaction():
        # The show's row held: the first request's batch waits, the three others queue behind
        # it and share the next batch.
        await db.execute("SELECT 1 FROM shows WHERE show_id = $1 FOR UPDATE", uuid.UUID(show_id))
        first = asyncio.ensure_future(book(client, show_id))
        await until(lambda: _in_batch(client, show_id))
        batch = asyncio.gather(
            client.post("/book-tickets", json=booking_body(show_id, 1)),
            client.post("/book-tickets", json=booking_body(show_id, 2), headers=keyed),
            client.delete(f"/bookings/{existing['booking_id']}"),
        )
        await until(lambda: _queued(client, show_id, 3))
        proxy.cut_after_commit(times=2, application_name="tickets")
    unkeyed, with_key, canceled = await batch
    assert ((await first)[0], proxy.seen.commits_cut) == (201, 2)
    assert [unkeyed.status, with_key.status, canceled.status] == [201, 201, 200]
    assert (await canceled.json())["status"] == "canceled"
    again = await client.post("/book-tickets", json=booking_body(show_id, 2), headers=keyed)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await with_key.json()
    made = {(await r.json())["booking_id"] for r in (unkeyed, with_key)} | {
        (await first)[1]["booking_id"]
    }
    rows = await db.fetch(
        "SELECT booking_id, status FROM bookings WHERE show_id = $1", uuid.UUID(show_id)
    )
    assert {str(r["booking_id"]): r["status"] for r in rows} == {
        existing["booking_id"]: "canceled",
        **dict.fromkeys(made, "confirmed"),
    }
    assert await assert_show_consistent(db, show_id) == 4


async def _queued(client: Client, show_id: str, count: int) -> bool:
    """`count` requests wait in the show's lane, not yet in a batch."""
    booker = client.app[BOOKER]
    assert isinstance(booker, BookingCoalescer)
    return booker.queued(uuid.UUID(show_id)) == count


async def _in_batch(client: Client, show_id: str) -> bool:
    """The first request left the lane's queue: its batch runs (and waits on the show's row)."""
    booker = client.app[BOOKER]
    assert isinstance(booker, BookingCoalescer)
    return booker.running(uuid.UUID(show_id))
