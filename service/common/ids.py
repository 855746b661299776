"""Ids for bookings, events and requests: UUIDv7, time-ordered, 74 random bits each.

Time-ordered, so a table's primary key index grows at its right edge instead of taking every
insert at a random page: booking and outbox inserts touch few index pages however large the
tables get. Random from the operating system's CSPRNG (a booking id is what a client needs to
cancel it, so it must not be guessable from another: no counter in it), drawn 4 KiB at a time
rather than one system call per id (uuid4's cost).
"""

from __future__ import annotations

import os
import time
import uuid

_BATCH = 4096
_pool = b""
_offset = _BATCH


def random_bits(count: int) -> int:
    """`count` random bits (a multiple of 8, at most 256) from the operating system's CSPRNG:
    ids no one can guess, for a fraction of a system call each."""
    global _pool, _offset
    size = count // 8
    if _offset + size > len(_pool):
        _pool, _offset = os.urandom(_BATCH), 0
    bits = int.from_bytes(_pool[_offset : _offset + size])
    _offset += size
    return bits


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits."""
    random = random_bits(80)
    millis = time.time_ns() // 1_000_000
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (random >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | random & 0x3FFF_FFFF_FFFF_FFFF
    )
    return uuid.UUID(int=value)
