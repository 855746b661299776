"""The real API and database against a plain model, on random sequences of requests.

A hypothesis state machine creates shows, books (with no Idempotency-Key, a new one, or one used
before with the same or another body), cancels (bookings that exist, again, or never did) and
reads shows back. A model in memory serves the same requests one at a time, the obvious way;
every answer must be the model's, and after every step the tables must agree with it: each
show's counter, its confirmed bookings, one BookingMade per booking and one BookingCanceled per
cancellation in the outbox. Whatever the coalescer, the lanes and the stored answers do inside,
from outside the service must behave like this model.

The API runs on an event loop of its own in a thread (the state machine's rules are plain
functions), on a database of its own.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from service.api import create_app
from service.settings import Settings
from tests.support.api import booking_body, show_body
from tests.support.database import asyncpg_dsn, create_migrated_database, drop_database

T = TypeVar("T")
NOT_ENOUGH = {"error": "not enough seats available"}
NO_SHOW = {"error": "show not found"}
NO_BOOKING = {"error": "booking not found"}


class ServiceThread:
    """The API and a connection to its database, on a loop in a thread of their own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.url = self.run(create_migrated_database("tickets_model"))
        self.client = self.run(self._start_client())
        self.db: asyncpg.Connection = self.run(asyncpg.connect(asyncpg_dsn(self.url)))

    async def _start_client(self) -> TestClient[web.Request, web.Application]:
        app = create_app(Settings.from_env({}).replaced(database_url=self.url, http_port=0))
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        return client

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=60)

    def request(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, str | None]:
        async def send() -> tuple[int, Any, str | None]:
            response = await self.client.request(method, path, json=json, headers=headers)
            return (
                response.status,
                await response.json(),
                response.headers.get("Idempotent-Replayed"),
            )

        return self.run(send())

    def close(self) -> None:
        self.run(self.db.close())
        self.run(self.client.close())
        self.run(drop_database(self.url))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class ShowModel:
    capacity: int
    booked: int = 0
    made: int = 0  # BookingMade events
    canceled: int = 0  # BookingCanceled events


@dataclass
class BookingModel:
    show_id: str
    tickets: int
    canceled_answer: dict[str, Any] | None = None  # the body of its first cancellation


@dataclass
class KeyModel:
    body: dict[str, Any]
    answer: tuple[int, Any]


@dataclass
class Model:
    shows: dict[str, ShowModel] = field(default_factory=dict)
    bookings: dict[str, BookingModel] = field(default_factory=dict)
    keys: dict[str, KeyModel] = field(default_factory=dict)

    def book(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        """The answer to a booking, None for a 201 (its booking id is the service's to make)."""
        show = self.shows.get(body["show_id"])
        if show is None:
            return 404, NO_SHOW
        if show.booked + body["number_of_tickets"] > show.capacity:
            return 400, NOT_ENOUGH
        return None


class BookingMachine(RuleBasedStateMachine):
    service: ServiceThread

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()

    @rule(capacity=st.integers(0, 6))
    def create_show(self, capacity: int) -> None:
        status, body, _ = self.service.request("POST", "/shows", show_body(capacity))
        assert status == 201, body
        self.model.shows[body["show_id"]] = ShowModel(capacity)

    @rule(
        data=st.data(),
        tickets=st.integers(1, 4),
        key_use=st.sampled_from(["none", "new", "same body", "other body"]),
    )
    def book(self, data: st.DataObject, tickets: int, key_use: str) -> None:
        show_id = data.draw(st.sampled_from([*self.model.shows, str(uuid.uuid4())]))
        body = booking_body(show_id, tickets)
        key = None
        if key_use in ("same body", "other body") and self.model.keys:
            key = data.draw(st.sampled_from(sorted(self.model.keys)))
            stored = self.model.keys[key]
            body = stored.body if key_use == "same body" else _other(stored.body)
        elif key_use != "none":
            key = f"model-{uuid.uuid4()}"
        headers = {"Idempotency-Key": key} if key else None
        status, answer, replayed = self.service.request("POST", "/book-tickets", body, headers)
        self._check_booking(key, body, status, answer, replayed)

    def _check_booking(
        self, key: str | None, body: dict[str, Any], status: int, answer: Any, replayed: str | None
    ) -> None:
        stored = self.model.keys.get(key) if key else None
        if stored is not None:
            expected = stored.answer if stored.body == body else (422, None)
            assert status == expected[0], (status, answer, expected)
            if status != 422:
                assert (answer, replayed) == (expected[1], "true")
            return
        refused = self.model.book(body)
        if refused is not None:
            expected = refused
        else:
            assert status == 201, answer
            booking_id = answer["booking_id"]
            show = self.model.shows[body["show_id"]]
            show.booked += body["number_of_tickets"]
            show.made += 1
            self.model.bookings[booking_id] = BookingModel(
                body["show_id"], body["number_of_tickets"]
            )
            expected = (201, {"booking_id": booking_id})
        assert ((status, answer), replayed) == (expected, None)
        if key is not None:
            self.model.keys[key] = KeyModel(body, expected)

    @rule(data=st.data(), known=st.booleans())
    def cancel(self, data: st.DataObject, known: bool) -> None:
        if known and self.model.bookings:
            booking_id = data.draw(st.sampled_from(sorted(self.model.bookings)))
        else:
            booking_id = str(uuid.uuid4())
        status, answer, _ = self.service.request("DELETE", f"/bookings/{booking_id}")
        booking = self.model.bookings.get(booking_id)
        if booking is None:
            assert (status, answer) == (404, NO_BOOKING)
            return
        assert status == 200, answer
        if booking.canceled_answer is not None:
            assert answer == booking.canceled_answer  # again: the same, nothing changes
            return
        assert (answer["status"], answer["number_of_tickets"]) == ("canceled", booking.tickets)
        assert answer["canceled_at"] is not None
        booking.canceled_answer = answer
        show = self.model.shows[booking.show_id]
        show.booked -= booking.tickets
        show.canceled += 1

    @precondition(lambda self: bool(self.model.shows))
    @rule(data=st.data())
    def read_show(self, data: st.DataObject) -> None:
        show_id = data.draw(st.sampled_from(sorted(self.model.shows)))
        status, answer, _ = self.service.request("GET", f"/shows/{show_id}")
        show = self.model.shows[show_id]
        assert status == 200
        assert (answer["tickets_booked"], answer["tickets_available"]) == (
            show.booked,
            show.capacity - show.booked,
        )

    @invariant()
    def tables_agree_with_the_model(self) -> None:
        if not self.model.shows:
            return
        rows = self.service.run(
            self.service.db.fetch(
                """
                SELECT s.show_id::text AS show_id, s.tickets_booked,
                  (SELECT coalesce(sum(number_of_tickets), 0) FROM bookings b
                    WHERE b.show_id = s.show_id AND b.status = 'confirmed') AS confirmed,
                  (SELECT count(*) FROM outbox o WHERE o.ordering_key = s.show_id
                    AND o.routing_key = 'BookingMade') AS made,
                  (SELECT count(*) FROM outbox o WHERE o.ordering_key = s.show_id
                    AND o.routing_key = 'BookingCanceled') AS canceled
                FROM shows s WHERE s.show_id = ANY($1::uuid[])
                """,
                list(self.model.shows),
            )
        )
        found = {
            r["show_id"]: (r["tickets_booked"], r["confirmed"], r["made"], r["canceled"])
            for r in rows
        }
        expected = {
            show_id: (show.booked, show.booked, show.made, show.canceled)
            for show_id, show in self.model.shows.items()
        }
        assert found == expected


def _other(body: dict[str, Any]) -> dict[str, Any]:
    return body | {"number_of_tickets": body["number_of_tickets"] % 4 + 1}


def test_the_service_behaves_like_the_model() -> None:
    service = ServiceThread()
    try:
        BookingMachine.service = service
        run_state_machine_as_test(
            BookingMachine,
            settings=settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                derandomize=True,  # the same sequences every run: a failure comes back
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        service.close()
