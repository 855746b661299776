"""Ids are UUIDv7: version and variant right, ordered by time, never repeated."""

from __future__ import annotations

import itertools
import time
import uuid

from service.common.ids import new_id, random_bits


def test_ids_are_uuid7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= made.int >> 80 <= after


def test_ids_are_unique_and_ordered_by_millisecond() -> None:
    made = [new_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    millis = [m.int >> 80 for m in made]
    assert millis == sorted(millis)
    # 74 random bits: no two ids of one millisecond share them, and they do not count up.
    randoms = [m.int & ((1 << 76) - 1) for m in made]
    assert len(set(randoms)) == len(randoms)
    assert sum(b > a for a, b in itertools.pairwise(randoms)) < len(made) * 0.6


def test_random_bits_fit_their_size_and_do_not_repeat() -> None:
    for bits in (64, 80, 128):
        drawn = [random_bits(bits) for _ in range(5_000)]  # across several 4 KiB draws
        assert all(0 <= value < 1 << bits for value in drawn)
        assert len(set(drawn)) == len(drawn)
        assert max(drawn).bit_length() > bits - 8  # the high bytes are used too
