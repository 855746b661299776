"""consumers/isolation.py: which deliveries come back after a crash (the rest is tested on the
real broker: tests/integration/test_consumers_delivery_limit.py)."""

from __future__ import annotations

from consumers.isolation import DELIVERY_COUNT, delivered_before


def test_a_message_delivered_before_is_one_whose_delivery_ended_without_an_ack() -> None:
    assert delivered_before({DELIVERY_COUNT: 2})
    assert not delivered_before({DELIVERY_COUNT: 0})
    assert not delivered_before({})  # RabbitMQ 3.10 sets it only on a delivery after the first
    assert not delivered_before({DELIVERY_COUNT: True})
