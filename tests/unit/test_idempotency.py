"""The rules for Idempotency-Keys in a batch: replay, refuse another body, one booking per key."""

from __future__ import annotations

import uuid

from service.api.errors import answer_for
from service.common.encoding import to_json
from service.domain import (
    BookingRequest,
    Capacity,
    IdempotencyKey,
    IdempotencyKeyReused,
    NotEnoughSeats,
    StoredAnswer,
    decide_for_shows,
    outcomes,
)
from service.idempotency import StoredKey, settle, sort_out

SHOW = uuid.uuid4()


def keyed(key: str, tickets: int = 1, body: str = "A") -> BookingRequest:
    return BookingRequest(SHOW, tickets, "fan@example.com", "c", key=IdempotencyKey(key, body))


def decide_keyed(
    requests: list[BookingRequest], stored: dict[str, StoredKey], capacity: Capacity
) -> tuple[dict[uuid.UUID, object], list[tuple[IdempotencyKey, StoredAnswer]]]:
    batch = sort_out(requests, stored)
    decision = decide_for_shows({SHOW: capacity}, batch.fresh)
    settled, to_store = settle(batch, decision, answer_for)
    return dict(outcomes(settled)), to_store


def test_a_stored_answer_is_replayed_for_the_same_body_and_refused_for_another() -> None:
    answer = StoredAnswer(201, to_json({"booking_id": "b"}), uuid.uuid4())
    stored = {"k": StoredKey("A", answer)}
    same, other, plain = keyed("k"), keyed("k", body="B"), BookingRequest(SHOW, 1, "x@y.z", "c")
    found, to_store = decide_keyed([same, other, plain], stored, Capacity(10, 0))
    assert found[same.request_id] == answer
    assert isinstance(found[other.request_id], IdempotencyKeyReused)
    assert found[plain.request_id] is None  # booked
    assert to_store == []  # nothing new to store: the replay and the 422 store nothing


def test_requests_with_one_key_in_one_batch_book_once_and_share_the_answer() -> None:
    first, again, other_body, more = keyed("k"), keyed("k"), keyed("k", body="B"), keyed("k")
    found, to_store = decide_keyed([first, again, other_body, more], {}, Capacity(10, 0))
    assert found[first.request_id] is None  # booked: answered as booked, 201
    expected = StoredAnswer(201, to_json({"booking_id": str(first.booking_id)}), first.booking_id)
    assert found[again.request_id] == found[more.request_id] == expected
    assert isinstance(found[other_body.request_id], IdempotencyKeyReused)
    assert to_store == [(first.key, expected)]


def test_a_refusal_is_stored_and_followed() -> None:
    big, big_again, small = keyed("k", tickets=5), keyed("k", tickets=5), keyed("j", tickets=1)
    found, to_store = decide_keyed([big, big_again, small], {}, Capacity(2, 0))
    assert isinstance(found[big.request_id], NotEnoughSeats)
    refusal = StoredAnswer(400, to_json({"error": "not enough seats available"}))
    assert found[big_again.request_id] == refusal
    assert found[small.request_id] is None
    assert [(key.key, answer.status) for key, answer in to_store] == [("k", 400), ("j", 201)]
