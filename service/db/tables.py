"""Table handles for queries. The schema itself is defined by the Alembic migrations only."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

shows = Table(
    "shows",
    metadata,
    Column("show_id", Uuid, primary_key=True),
    Column("dead_nation_id", Uuid, nullable=False, unique=True),
    Column("number_of_tickets", Integer, nullable=False),
    # Kept in step with the bookings so the capacity check is one row read, however many
    # bookings a show has; CHECK (tickets_booked <= number_of_tickets) guards it.
    Column("tickets_booked", Integer, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("title", Text, nullable=False),
    Column("venue", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

bookings = Table(
    "bookings",
    metadata,
    Column("booking_id", Uuid, primary_key=True),
    Column("show_id", Uuid, nullable=False),
    Column("number_of_tickets", Integer, nullable=False),
    Column("customer_email", Text, nullable=False),
    Column("correlation_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # 'confirmed' or 'canceled'; canceled_at is set exactly when canceled (migration 0003).
    Column("status", Text, nullable=False),
    Column("canceled_at", DateTime(timezone=True), nullable=True),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),  # of the request body the key came with
    Column("status", SmallInteger, nullable=False),  # the answer given, replayed as it was
    Column("body", Text, nullable=False),
    Column("booking_id", Uuid, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("routing_key", Text, nullable=False),
    # Events with the same ordering key are published in id order (the show id for bookings).
    Column("ordering_key", Uuid, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("correlation_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("traceparent", Text, nullable=True),  # W3C trace context of the writing request
)
