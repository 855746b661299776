"""Client retries with an Idempotency-Key while the database loses the answers to COMMITs.

A COMMIT whose answer is lost leaves the client of the API not knowing: the API answers 503
(or, once it looks the batch up after a lost COMMIT, 201), yet the booking may be committed.
A client that retries with the same key must never book twice: the key's answer is committed
with the booking, so a retry finds it.

The API runs in this process, its database behind a PostgreSQL-aware TCP proxy
(tests/support/proxy.py, PostgresProxy) that lets the server commit and then cuts the
connection before the answer comes back. 200 clients, one key each, try each booking up to
three times, in three rounds: in the first every COMMIT's answer is lost, in the second the
first one is, in the third none. That leaves no key without a clean attempt, so the count
must be exact: bookings = keys answered 201, and every 201 for a key names one booking.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict

import asyncpg

from tests.support.api import Client, booking_body, create_show
from tests.support.invariants import assert_show_consistent
from tests.support.proxy import PostgresProxy

KEYS = 200
BOUND = 60.0


class Answers:
    """Every answer each key got, in order."""

    def __init__(self) -> None:
        self.by_key: defaultdict[str, list[tuple[int, str | None]]] = defaultdict(list)

    def booked(self) -> dict[str, set[str | None]]:
        """Each key answered 201, with the booking ids its 201s named."""
        return {
            key: {booking_id for status, booking_id in got if status == 201}
            for key, got in self.by_key.items()
            if any(status == 201 for status, _ in got)
        }

    def statuses(self) -> Counter[int]:
        return Counter(status for got in self.by_key.values() for status, _ in got)


async def attempt_all(client: Client, show_id: str, keys: list[str], answers: Answers) -> None:
    """One attempt for every key not yet answered 201, all at once."""

    async def attempt(key: str) -> None:
        if any(status == 201 for status, _ in answers.by_key[key]):
            return
        response = await client.post(
            "/book-tickets", json=booking_body(show_id, 1), headers={"Idempotency-Key": key}
        )
        body = await response.json()
        answers.by_key[key].append((response.status, body.get("booking_id")))

    await asyncio.gather(*(attempt(key) for key in keys))


async def test_retries_with_one_key_never_book_twice_when_commit_answers_are_lost(
    proxied_client: Client, proxy: PostgresProxy, db: asyncpg.Connection
) -> None:
    client = proxied_client
    show_id = await create_show(client, 1_000)
    keys = [str(uuid.uuid4()) for _ in range(KEYS)]
    answers = Answers()
    async with asyncio.timeout(BOUND):
        # Round 1: the server commits every booking transaction; no answer gets back.
        proxy.cut_after_commit(times=None, application_name="tickets")
        await attempt_all(client, show_id, keys, answers)
        assert set(answers.statuses()) <= {201, 503}, answers.statuses()
        booked_unknowingly = await bookings_of(db, show_id)
        assert booked_unknowingly > 0 and proxy.seen.commits_cut > 0
        # Round 2: the first COMMIT answer is lost again. Round 3: none.
        proxy.cut_after_commit(times=1, application_name="tickets")
        await attempt_all(client, show_id, keys, answers)
        proxy.disarm()
        await attempt_all(client, show_id, keys, answers)
    booked = answers.booked()
    assert len(booked) == KEYS, answers.statuses()  # every key got its 201 in the end
    assert all(len(ids) == 1 for ids in booked.values()), "one key, two bookings"
    in_table = await db.fetch(
        "SELECT b.booking_id, k.key FROM bookings b"
        " LEFT JOIN idempotency_keys k ON k.booking_id = b.booking_id WHERE b.show_id = $1",
        uuid.UUID(show_id),
    )
    # Bookings = distinct keys that got 201, never more; and each is the one its key names.
    assert len(in_table) == len(booked) == KEYS
    assert {row["key"]: str(row["booking_id"]) for row in in_table} == {
        key: next(iter(ids)) for key, ids in booked.items()
    }
    assert await assert_show_consistent(db, show_id) == KEYS
    print(
        f"\nlost COMMIT answers: {proxy.seen.commits_cut} of {proxy.seen.commits} commits;"
        f" {booked_unknowingly} bookings made while their clients were told 503;"
        f" answers {dict(answers.statuses())}"
    )


async def bookings_of(db: asyncpg.Connection, show_id: str) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", uuid.UUID(show_id))
    )
