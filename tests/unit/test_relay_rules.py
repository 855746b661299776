"""The relay's pure parts: the message of the event contract, what counts as confirmed, backoff."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import aio_pika

from service.common.outages import Backoff
from service.db.outbox import OutboxRow
from service.relay import confirmed_prefix, message_for


def row(n: int = 1) -> OutboxRow:
    return OutboxRow(
        id=n,
        event_id=uuid.uuid4(),
        routing_key="BookingMade",
        ordering_key=uuid.uuid4(),
        payload='{"booking_id": "b", "number_of_tickets": 2}',
        correlation_id="sale-1",
        created_at=datetime(2026, 11, 25, 12, tzinfo=UTC),
    )


def test_message_carries_the_contract_properties() -> None:
    source = row()
    message = message_for(source)
    assert json.loads(message.body) == {"booking_id": "b", "number_of_tickets": 2}
    assert message.message_id == str(source.event_id)
    assert message.correlation_id == "sale-1"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.type == "BookingMade"
    assert message.timestamp == source.created_at


def test_only_the_gapless_confirmed_prefix_counts() -> None:
    rows = [row(n) for n in range(5)]
    failed = TimeoutError()
    assert confirmed_prefix(rows, [None] * 5) == 5
    assert confirmed_prefix(rows, [None, None, failed, None, None]) == 2
    assert confirmed_prefix(rows, [failed, None, None, None, None]) == 0


def test_backoff_grows_to_its_cap_and_starts_over_after_reset() -> None:
    backoff = Backoff(cap=2.0, first=0.1)
    delays = [backoff.next_delay() for _ in range(2000)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0 < d <= 2.0 for d in delays)
    assert min(delays[-100:]) >= 1.0  # at the cap: never a busy loop
    backoff.reset()
    assert backoff.next_delay() <= 0.1
