"""BookingMade and BookingCanceled messages exactly as the relay publishes them (the README's
event contract), for consumer tests that do not run the relay."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import aio_pika
import asyncpg

from service.broker import connect, declare_events_exchange
from service.domain import BOOKING_MADE, BookingCanceled, BookingEvent, BookingMade
from service.settings import Settings
from tests.support.database import asyncpg_dsn


def booking_made(
    show_id: uuid.UUID, tickets: int = 1, email: str = "fan@example.com"
) -> BookingMade:
    return BookingMade(
        event_id=uuid.uuid4(),
        published_at=datetime.now(UTC),
        booking_id=uuid.uuid4(),
        show_id=show_id,
        number_of_tickets=tickets,
        customer_email=email,
    )


def canceled(event: BookingMade) -> BookingCanceled:
    """The BookingCanceled that undoes `event`."""
    return BookingCanceled(
        event_id=uuid.uuid4(),
        published_at=datetime.now(UTC),
        booking_id=event.booking_id,
        show_id=event.show_id,
        number_of_tickets=event.number_of_tickets,
        customer_email=event.customer_email,
    )


def message_for(event: BookingEvent, correlation_id: str = "test") -> aio_pika.Message:
    body = json.dumps(event.body()).encode()
    return raw_message(body, str(event.event_id), correlation_id, event.name)


def raw_message(
    body: bytes,
    message_id: str | None,
    correlation_id: str = "test",
    event_type: str = BOOKING_MADE,
) -> aio_pika.Message:
    """Any body with the contract's properties: for poison messages."""
    return aio_pika.Message(
        body=body,
        message_id=message_id,
        correlation_id=correlation_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=event_type,
        timestamp=datetime.now(UTC),
    )


async def publish(settings: Settings, messages: Iterable[aio_pika.Message]) -> None:
    """Publish to the run's events exchange, routing key = the message's type, each one
    confirmed."""
    connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-publisher")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_events_exchange(channel, settings.events_exchange)
        for message in messages:
            await exchange.publish(message, message.type or BOOKING_MADE, timeout=10)


async def outbox_messages(database_url: str) -> list[aio_pika.Message]:
    """Every outbox row as the relay would publish it: what the booking transaction wrote."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT event_id, routing_key, payload, correlation_id FROM outbox ORDER BY id"
        )
    finally:
        await conn.close()
    return [
        raw_message(
            row["payload"].encode(), str(row["event_id"]), row["correlation_id"], row["routing_key"]
        )
        for row in rows
    ]


async def insert_bookings(db: asyncpg.Connection, events: Iterable[BookingMade]) -> None:
    """The bookings rows the events stand for (confirmed), so that ticket_provider, which reads
    a booking's row before it calls the provider, takes them for real ones."""
    await db.executemany(
        "INSERT INTO bookings (booking_id, show_id, number_of_tickets, customer_email,"
        " correlation_id, created_at) VALUES ($1, $2, $3, $4, 'test', $5)",
        [
            (e.booking_id, e.show_id, e.number_of_tickets, e.customer_email, e.published_at)
            for e in events
        ],
    )
