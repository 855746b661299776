"""The consumers' pure parts: reading BookingMade, the retry policy, headers, reconcile."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from datetime import UTC, datetime

import pytest

from consumers.bootstrap import selected
from consumers.messages import PoisonMessage, parse_event
from consumers.retries import (
    ATTEMPTS,
    EXHAUSTED,
    LAST_ERROR,
    REDRIVEN,
    GiveUp,
    RetryIn,
    RetryPolicy,
    attempts_of,
    dead_letter_headers,
    redrive_headers,
    retry_headers,
)
from consumers.show_sales import Difference, Sales, differences, net_changes
from consumers.ticket_provider import BookingRow, booking_request, delete_key, worth_retrying
from consumers.topology import Topology
from service.domain import (
    BOOKING_CANCELED,
    BOOKING_MADE,
    BookingCanceled,
    BookingMade,
    cancellation_key,
)
from service.settings import Settings, SettingsError

EVENT = BookingMade(
    event_id=uuid.uuid4(),
    published_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    booking_id=uuid.uuid4(),
    show_id=uuid.uuid4(),
    number_of_tickets=2,
    customer_email="a@b.example",
)
BODY = EVENT.body()


def encoded(body: object) -> bytes:
    return json.dumps(body).encode()


def test_reads_the_contract_body() -> None:
    key, event = parse_event(encoded(BODY), str(EVENT.event_id), BOOKING_MADE)
    assert (key, event) == (EVENT.event_id, EVENT)


def test_the_amqp_type_tells_a_cancellation_from_a_booking() -> None:
    canceled = BookingCanceled(**dataclasses.asdict(EVENT))
    body = canceled.body()
    assert body["header"]["idempotency_key"] == str(cancellation_key(EVENT.booking_id))
    assert body["header"]["idempotency_key"] != str(EVENT.booking_id)
    _, event = parse_event(encoded(body), str(EVENT.event_id), BOOKING_CANCELED)
    assert event == canceled and isinstance(event, BookingCanceled)
    for event_type in (None, "", "BookingMade.v2"):
        with pytest.raises(PoisonMessage, match="type"):
            parse_event(encoded(BODY), str(EVENT.event_id), event_type)


def test_message_id_is_the_key_and_header_id_the_fallback() -> None:
    other = uuid.uuid4()
    assert parse_event(encoded(BODY), str(other), BOOKING_MADE)[0] == other
    assert parse_event(encoded(BODY), None, BOOKING_MADE)[0] == EVENT.event_id


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "Invalid JSON"),
        (b"[]", "body"),
        (encoded({k: v for k, v in BODY.items() if k != "show_id"}), "show_id"),
        (encoded(BODY | {"number_of_tickets": "2"}), "number_of_tickets"),
        (encoded(BODY | {"number_of_tickets": 0}), "number_of_tickets"),
        (encoded(BODY | {"header": {"id": "x"}}), "header.id"),
        (encoded(BODY | {"customer_email": ""}), "customer_email"),
    ],
)
def test_unreadable_messages_are_poison(body: bytes, problem: str) -> None:
    with pytest.raises(PoisonMessage, match=problem):
        parse_event(body, str(uuid.uuid4()), BOOKING_MADE)


def test_a_message_id_that_is_not_a_uuid_is_poison() -> None:
    with pytest.raises(PoisonMessage, match="not a UUID"):
        parse_event(encoded(BODY), "abc", BOOKING_MADE)


def test_retries_wait_longer_each_time_and_the_last_delay_repeats() -> None:
    policy = RetryPolicy(max_attempts=6, delays_ms=(10, 20, 30))
    steps = [policy.after_failure(n) for n in range(1, 7)]
    retries = [RetryIn(10), RetryIn(20), RetryIn(30), RetryIn(30), RetryIn(30)]
    assert steps == [*retries, GiveUp(EXHAUSTED)]


def test_one_attempt_means_no_retry() -> None:
    assert RetryPolicy(1, (10,)).after_failure(1) == GiveUp(EXHAUSTED)


def test_attempt_header_survives_only_when_sane() -> None:
    assert attempts_of({ATTEMPTS: 3}) == 3
    assert attempts_of({}) == attempts_of({ATTEMPTS: "3"}) == attempts_of({ATTEMPTS: -1}) == 0


def test_headers_drop_the_brokers_and_keep_the_rest() -> None:
    given = {"x-death": [{}], "x-first-death-queue": "q", "trace": "t"}
    assert retry_headers(given, 2, "boom") == {"trace": "t", ATTEMPTS: 2, LAST_ERROR: "boom"}
    dead = dead_letter_headers(given, "show_sales", 5, EXHAUSTED, "e" * 2000)
    assert "x-death" not in dead and dead["consumer"] == "show_sales"
    assert len(str(dead[LAST_ERROR])) == 500


def test_redrive_starts_attempts_afresh_and_counts_redrives() -> None:
    dead = dead_letter_headers({"trace": "t"}, "c", 5, EXHAUSTED, "boom")
    again = redrive_headers(dead)
    assert again == {"trace": "t", REDRIVEN: 1}
    assert redrive_headers(again)[REDRIVEN] == 2


def test_queue_names_start_with_the_events_exchange() -> None:
    topology = Topology.of("events", "show_sales", (50, 100, 50), delivery_limit=5)
    assert topology.main == "events.show_sales"
    assert topology.dead_letter == "events.show_sales.dlq"
    assert topology.retry(100) == "events.show_sales.retry.100"
    assert sorted(topology.queue_names()) == sorted(
        [
            "events.show_sales",
            "events.show_sales.dlq",
            "events.show_sales.retry.50",
            "events.show_sales.retry.100",
        ]
    )
    # Another deployment on the same broker (its own EVENTS_EXCHANGE): no queue in common.
    other = Topology.of("staging-events", "show_sales", (50, 100), delivery_limit=5)
    assert not set(other.queue_names()) & set(topology.queue_names())


def test_quorum_queues_dead_letter_at_least_once() -> None:
    topology = Topology.of("events", "show_sales", (50,), delivery_limit=3)
    at_least_once = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # without it RabbitMQ silently drops to at-most-once
    }
    main = topology.main_arguments()
    assert main == at_least_once | {
        "x-dead-letter-routing-key": "events.show_sales.dlq",
        "x-delivery-limit": 3,
    }
    assert topology.retry_arguments(50) == at_least_once | {
        "x-dead-letter-routing-key": "events.show_sales",
        "x-message-ttl": 50,
    }


def test_differences_name_every_show_that_disagrees() -> None:
    a, b, c = sorted(uuid.uuid4() for _ in range(3))
    booked = {a: Sales(3, 2), b: Sales(1, 1)}
    model = {a: Sales(3, 2), c: Sales(2, 1)}
    assert differences(booked, model) == [
        Difference(b, Sales(1, 1), Sales(0, 0)),
        Difference(c, Sales(0, 0), Sales(2, 1)),
    ]
    assert differences(booked, dict(booked)) == []


def test_provider_request_and_what_is_worth_retrying() -> None:
    dead_nation_id = uuid.uuid4()
    row = BookingRow(EVENT.booking_id, EVENT.show_id, 2, "a@b.example", "confirmed", dead_nation_id)
    assert row.describes(EVENT)
    assert not BookingRow(
        EVENT.booking_id, EVENT.show_id, 3, "a@b.example", "confirmed", dead_nation_id
    ).describes(EVENT)
    assert booking_request(row) == {
        "booking_id": str(EVENT.booking_id),
        "customer_address": "a@b.example",
        "event_id": str(dead_nation_id),
        "number_of_tickets": 2,
    }
    assert [s for s in (400, 404, 408, 409, 422, 429, 500, 503) if worth_retrying(s)] == [
        408,
        429,
        500,
        503,
    ]


def test_run_all_skips_the_provider_without_a_url_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    without = Settings.from_env({})
    with caplog.at_level(logging.INFO, logger="consumers"):
        assert selected(without, "all") == ["show_sales"]
    assert [r.getMessage() for r in caplog.records] == [
        "ticket_provider skipped: TICKET_PROVIDER_URL is not set"
    ]
    with_url = Settings.from_env({"TICKET_PROVIDER_URL": "http://provider.example"})
    assert selected(with_url, "all") == ["show_sales", "ticket_provider"]
    assert selected(without, "show_sales") == ["show_sales"]
    with pytest.raises(SettingsError, match="TICKET_PROVIDER_URL"):
        selected(without, "ticket_provider")


def test_the_two_deletes_of_a_booking_have_keys_of_their_own() -> None:
    canceled = BookingCanceled(**dataclasses.asdict(EVENT))
    keys = {delete_key(canceled), delete_key(EVENT), EVENT.booking_id}
    assert len(keys) == 3
    assert delete_key(EVENT) == delete_key(EVENT)  # the same on every attempt


def test_a_batch_adds_the_net_change_of_its_claimed_messages_per_show_in_show_order() -> None:
    def made(show: uuid.UUID, tickets: int) -> tuple[uuid.UUID, BookingMade]:
        event = BookingMade(uuid.uuid4(), datetime.now(UTC), uuid.uuid4(), show, tickets, "a@b.c")
        return event.event_id, event

    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    first, second, other, skipped = made(high, 3), made(high, 2), made(low, 4), made(low, 5)
    undo = BookingCanceled(uuid.uuid4(), datetime.now(UTC), second[1].booking_id, high, 2, "a@b.c")
    batch = [first, second, first, (undo.event_id, undo), other, skipped]
    claimed = {first[0], second[0], undo.event_id, other[0]}  # `skipped` was applied before
    changes = net_changes(batch, claimed)
    assert changes == {low: Sales(4, 1), high: Sales(3, 1)}  # `first` twice counts once
    assert list(changes) == [low, high]  # rows locked in one order by every batch
