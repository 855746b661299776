"""Idempotency keys of a booking batch: pure rules, no I/O.

A request with an `Idempotency-Key` is answered, by the first rule that applies:
1. the key has an answer stored (committed before this batch's snapshot, by any API process):
   the same body gets that answer again, replayed; another body is refused (422);
2. an earlier request of the same batch has the key: the same body follows it (gets its answer,
   replayed: one booking for both); another body is refused (422);
3. otherwise the request is decided like any other, and its answer is stored with the key in
   the same transaction (service/db/booking.py), refusals (400, 404) included.
A key whose answer is still uncommitted in another transaction is not seen here: that
transaction's insert of the key makes ours wait for it and then fail (40001), and the retry,
with a new snapshot, finds the answer under rule 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from service.domain import (
    BatchDecision,
    BookingRequest,
    IdempotencyKey,
    Outcome,
    Request,
    StoredAnswer,
    outcomes,
)

# The answer a decided request is given, as the API sends it: stored with its key.
AnswerFor = Callable[[BookingRequest, Outcome], StoredAnswer]


@dataclass(frozen=True, slots=True)
class StoredKey:
    fingerprint: str  # of the body the key first came with
    answer: StoredAnswer


@dataclass(frozen=True, slots=True)
class KeyedBatch:
    fresh: list[Request]  # to decide: requests without a key, and the first with each new key
    replayed: dict[uuid.UUID, StoredAnswer]  # request_id -> the answer stored before
    reused: list[BookingRequest]  # a key that came with another body: 422
    followers: dict[uuid.UUID, uuid.UUID]  # request_id -> request_id of the first with its key


def sort_out(requests: Sequence[Request], stored: Mapping[str, StoredKey]) -> KeyedBatch:
    """Split a batch, in arrival order, by the rules above."""
    batch = KeyedBatch([], {}, [], {})
    firsts: dict[str, BookingRequest] = {}
    for request in requests:
        if not isinstance(request, BookingRequest) or request.key is None:
            batch.fresh.append(request)
            continue
        key = request.key
        found, first = stored.get(key.key), firsts.get(key.key)
        if not _same_body(key, found, first):
            batch.reused.append(request)
        elif found is not None:
            batch.replayed[request.request_id] = found.answer
        elif first is not None:
            batch.followers[request.request_id] = first.request_id
        else:
            firsts[key.key] = request
            batch.fresh.append(request)
    return batch


def _same_body(key: IdempotencyKey, found: StoredKey | None, first: BookingRequest | None) -> bool:
    if found is not None:
        return found.fingerprint == key.fingerprint
    if first is not None and first.key is not None:
        return first.key.fingerprint == key.fingerprint
    return True


def settle(
    batch: KeyedBatch, decision: BatchDecision, answer_for: AnswerFor
) -> tuple[BatchDecision, list[tuple[IdempotencyKey, StoredAnswer]]]:
    """The decision with every keyed request answered, and the new answers to store.

    `decision` is that of `batch.fresh`; the first request with a new key gets its own answer
    (stored), the requests that follow it get the same one, replayed."""
    decided = outcomes(decision)
    answers: dict[uuid.UUID, StoredAnswer] = {}
    to_store: list[tuple[IdempotencyKey, StoredAnswer]] = []
    for request in batch.fresh:
        if isinstance(request, BookingRequest) and request.key is not None:
            answer = answer_for(request, decided[request.request_id])
            answers[request.request_id] = answer
            to_store.append((request.key, answer))
    followed = {follower: answers[first] for follower, first in batch.followers.items()}
    replayed = batch.replayed | followed
    return replace(decision, replayed=replayed, key_reused=batch.reused), to_store
