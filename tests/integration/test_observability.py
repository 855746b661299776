"""What an operator sees: metrics that move with what happens, one trace from the HTTP request to
the ticket provider, JSON log lines that name the request and never a customer's e-mail."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema
import yaml
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import context as otel_context
from yarl import URL

from service.api import create_app
from service.common.logs import ContextFilter, JsonFormatter
from service.common.metrics import exposition
from service.common.tracing import context_of
from service.relay import OutboxRelay
from service.settings import Settings
from tests.support.api import Client, booking_body, create_show
from tests.support.bookings import book_many
from tests.support.broker import Received, bound_queue
from tests.support.consumers import consumer_queues, fast, own_database, running
from tests.support.events import booking_made, message_for, publish, raw_message
from tests.support.metrics import families, sample
from tests.support.provider import FakeProvider, serving
from tests.support.proxy import proxy_to
from tests.support.relay import running as relay_running
from tests.support.waiting import until

ASYNCAPI = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def scrape() -> str:
    return exposition()[0].decode()


class Delta:
    """How much samples moved since this object was made."""

    def __init__(self) -> None:
        self._before = scrape()

    def __call__(self, name: str, **labels: str) -> float:
        return sample(scrape(), name, **labels) - sample(self._before, name, **labels)


async def test_api_metrics_move_with_requests_and_booking_outcomes(client: Client) -> None:
    moved = Delta()
    show_id = await create_show(client, 1)
    statuses = [
        (await client.post("/book-tickets", json=booking_body(show, 1))).status
        for show in (show_id, show_id, str(uuid.uuid4()))
    ]
    assert statuses == [201, 400, 404]
    scraped = await client.get("/metrics")
    assert scraped.status == 200 and scraped.content_type == "text/plain"
    assert {
        "tickets_http_requests",
        "tickets_http_request_duration_seconds",
        "tickets_bookings",
        "tickets_booking_transactions",
        "tickets_booking_retries",
        "tickets_booking_batch_size",
        "tickets_cancellations",
    } <= families(await scraped.text())
    for outcome in ("accepted", "rejected", "unknown_show"):
        assert moved("tickets_bookings_total", outcome=outcome) == 1, outcome
    for status in ("201", "400", "404"):
        assert moved("tickets_http_requests_total", route="/book-tickets", status=status) == 1
    timed = moved("tickets_http_request_duration_seconds_count", route="/book-tickets")
    assert timed == 3
    assert moved("tickets_booking_transactions_total") == 3
    assert moved("tickets_booking_batch_size_count") == 3


async def test_relay_metrics_move_with_publishes_failures_and_leadership(
    settings: Settings,
) -> None:
    async with own_database() as url:
        relay_settings = settings.replaced(
            database_url=url,
            relay_poll_interval=0.1,
            relay_max_backoff=0.5,
            relay_publish_timeout=0.5,
        )
        amqp = URL(settings.amqp_url.get_secret_value())
        moved = Delta()
        async with proxy_to(amqp.host or "127.0.0.1", amqp.port or 5672) as proxy:
            behind_proxy = relay_settings.replaced(amqp_url=str(amqp.with_port(proxy.port)))
            async with relay_running(OutboxRelay(behind_proxy)) as relay:
                await book_many(url, 1, 10)
                await until(lambda: _reached(lambda: relay.published, 10))
                assert sample(scrape(), "tickets_relay_leader") == 1
                proxy.blackhole()  # confirms stop coming: publishes time out
                await book_many(url, 1, 5)
                await until(lambda: _moved(moved, "tickets_relay_publish_failures_total"))
                proxy.heal()
                await until(lambda: _reached(lambda: relay.published, 15), within=20)
            assert sample(scrape(), "tickets_relay_leader") == 0
        assert moved("tickets_relay_published_total") == relay.published
        assert moved("tickets_relay_commit_to_confirm_seconds_count") == relay.published
        assert {"tickets_outbox_backlog", "tickets_outbox_oldest_age_seconds"} <= families(scrape())


async def test_consumer_metrics_move_with_each_outcome(settings: Settings) -> None:
    settings = fast(settings, events_exchange=f"{settings.events_exchange}.metrics")
    name = "show_sales"
    moved = Delta()
    async with consumer_queues(settings, name):
        events = [booking_made(uuid.uuid4()) for _ in range(3)]
        poison = raw_message(b"{not json", str(uuid.uuid4()))
        twice = message_for(events[0])
        await publish(settings, [*map(message_for, events), twice, poison])
        async with running(settings, [name]):
            await until(lambda: _moved(moved, "tickets_consumer_dlq_messages", consumer=name))
            await until(lambda: _moved(moved, "tickets_consumer_messages_total", 5, consumer=name))
    by_outcome = {
        outcome: moved("tickets_consumer_messages_total", consumer=name, outcome=outcome)
        for outcome in ("applied", "duplicate", "retried", "dead_lettered")
    }
    assert by_outcome == {"applied": 3, "duplicate": 1, "retried": 0, "dead_lettered": 1}
    assert moved("tickets_consumer_lag_seconds_count", consumer=name) == 3
    assert sample(scrape(), "tickets_consumer_dlq_messages", consumer=name) == 1


async def test_one_booking_followed_from_the_request_to_the_ticket_provider(
    settings: Settings,
) -> None:
    """The request's trace reaches the AMQP message and the provider call; its correlation id
    reaches the consumer's log lines; every log line is JSON; no line names the customer; the
    published event is what docs/asyncapi.yaml says it is."""
    email = f"trace-{uuid.uuid4().hex[:8]}@example.com"
    async with _followed(settings) as (client, received, provider, logs):
        show_id = await create_show(client, 5)
        # The test client is instrumented too: it sends the current trace as `traceparent`.
        token = otel_context.attach(context_of(TRACEPARENT))
        try:
            answer = await client.post(
                "/book-tickets",
                json=booking_body(show_id, 2, customer_email=email),
                headers={"Correlation-ID": "followed-42"},
            )
        finally:
            otel_context.detach(token)
        assert answer.status == 201
        await received.wait_for(1)
        await until(lambda: _true(bool(provider.calls)))
    message = received.messages[0]
    assert _trace_id(message.headers.get("traceparent")) == TRACE_ID
    assert _trace_id(provider.calls[0].traceparent) == TRACE_ID
    _validate_against_asyncapi("BookingMade", json.loads(message.body))

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    followed = [line for line in lines if line["correlation_id"] == "followed-42"]
    assert {line["logger"] for line in followed} >= {"tickets.access", "consumers.delivery"}
    assert all(line["trace_id"] == TRACE_ID for line in followed)
    assert email not in logs.getvalue()


def test_the_committed_asyncapi_document_is_the_generated_one() -> None:
    from service.asyncapi import render

    assert ASYNCAPI.read_text() == render(), (
        "docs/asyncapi.yaml is stale: run `python -m service asyncapi > docs/asyncapi.yaml`"
    )


@asynccontextmanager
async def _followed(
    settings: Settings,
) -> AsyncIterator[tuple[Client, Received, FakeProvider, io.StringIO]]:
    """API, relay and ticket_provider on a database of their own, with a test queue on the
    exchange and every log line of the process captured as JSON."""
    async with own_database() as url, serving(FakeProvider()) as provider:
        own = fast(
            settings,
            database_url=url,
            events_exchange=f"{settings.events_exchange}.followed",
            ticket_provider_url=provider.url,
            relay_poll_interval=0.1,
        )
        connection = await aio_pika.connect(own.amqp_url.get_secret_value())
        async with (
            connection,
            consumer_queues(own, "ticket_provider"),
            bound_queue(await connection.channel(), own.events_exchange) as received,
        ):
            with _json_logs() as logs:
                async with (
                    relay_running(OutboxRelay(own)),
                    running(own, ["ticket_provider"]),
                    TestClient(TestServer(create_app(own))) as client,
                ):
                    yield client, received, provider, logs


@contextmanager
def _json_logs() -> Iterator[io.StringIO]:
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    # As configure_logging sets them: aiohttp's own access line off (the API writes its own),
    # and the consumers' line per applied message on.
    levels = {"": logging.INFO, "aiohttp.access": logging.WARNING, "consumers": logging.DEBUG}
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: logger.level for name, logger in loggers.items()}
    loggers[""].addHandler(handler)
    for name, level in levels.items():
        loggers[name].setLevel(level)
    try:
        yield captured
    finally:
        loggers[""].removeHandler(handler)
        for name, level in before.items():
            loggers[name].setLevel(level)


def _validate_against_asyncapi(event: str, body: dict[str, Any]) -> None:
    document = yaml.safe_load(ASYNCAPI.read_text())
    payload = document["components"]["messages"][event]["payload"]
    jsonschema.validate(body, {**payload, "components": document["components"]})


def _trace_id(traceparent: object) -> str:
    value = traceparent.decode() if isinstance(traceparent, bytes) else str(traceparent)
    return value.split("-")[1]


async def _true(value: bool) -> bool:
    return value


async def _reached(count: Any, target: int) -> bool:
    return bool(count() >= target)


async def _moved(moved: Delta, name: str, at_least: float = 1, **labels: str) -> bool:
    return moved(name, **labels) >= at_least
