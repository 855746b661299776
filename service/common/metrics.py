"""Prometheus metrics of every process, defined once, with the names the README lists.

With several API processes (API_WORKERS > 1) the parent points PROMETHEUS_MULTIPROC_DIR at a
directory before the workers start; prometheus-client then keeps each worker's values in files
there, and any worker's /metrics reports the sum of all of them. One process: plain in-memory
values, which cost a lock and an addition per update.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

# The API
HTTP_REQUESTS = Counter(
    "tickets_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "tickets_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
BOOKINGS = Counter(
    "tickets_bookings",
    "Booking requests by outcome: accepted, rejected (not enough seats), unknown_show, busy (503)",
    ["outcome"],
)
CANCELLATIONS = Counter("tickets_cancellations", "Bookings canceled (a repeat does not count)")
BOOKING_TRANSACTIONS = Counter(
    "tickets_booking_transactions", "Booking transactions that ran to their end"
)
BOOKING_RETRIES = Counter(
    "tickets_booking_retries", "Booking transactions run again after a lost serialization race"
)
BOOKING_BATCH_SIZE = Histogram(
    "tickets_booking_batch_size",
    "Requests decided by one booking transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)

# The relay
RELAY_LEADER = Gauge("tickets_relay_leader", "1 while this relay leads (publishes), 0 otherwise")
RELAY_PUBLISHED = Counter("tickets_relay_published", "Outbox rows confirmed by RabbitMQ")
RELAY_PUBLISH_FAILURES = Counter(
    "tickets_relay_publish_failures", "Publishes that failed (nack, timeout, lost connection)"
)
OUTBOX_BACKLOG = Gauge("tickets_outbox_backlog", "Outbox rows not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "tickets_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0: none)"
)
COMMIT_TO_CONFIRM = Histogram(
    "tickets_relay_commit_to_confirm_seconds",
    "From a booking's commit to RabbitMQ's confirm of its event",
    buckets=LAG_BUCKETS,
)

# The consumers
CONSUMER_MESSAGES = Counter(
    "tickets_consumer_messages",
    "Messages by outcome: applied, duplicate, retried, dead_lettered",
    ["consumer", "outcome"],
)
CONSUMER_LAG = Histogram(
    "tickets_consumer_lag_seconds",
    "From the event's commit to the consumer applying it",
    ["consumer"],
    buckets=LAG_BUCKETS,
)
CONSUMER_BATCH_SIZE = Histogram(
    "tickets_consumer_batch_size",
    "Messages one consumer transaction took (consumers that apply batches: show_sales)",
    ["consumer"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
CONSUMER_DLQ = Gauge(
    "tickets_consumer_dlq_messages", "Messages in the consumer's dead-letter queue", ["consumer"]
)


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type: this process's values, or, with several API
    processes, the sum over all of them."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if not directory:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def forget_process(pid: int) -> None:
    """A worker is gone: drop its live gauges from the sum (multiprocess mode only)."""
    if os.environ.get(MULTIPROCESS_DIR):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
