"""The event loop every process runs on: uvloop (libuv), measured 2-6 % less CPU per booking
than asyncio's own loop (docs/PERFORMANCE.md). The tests run on asyncio's loop; the processes
they start (tests/e2e) on this one."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop, with the collector tuned as in the API (tune_gc): the relay and
    the consumers handle many short messages too."""
    tune_gc()
    return uvloop.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


# The cyclic garbage collector's first generation is collected after this many allocations
# (CPython's default: 700). A request allocates a few hundred objects, nearly all freed by
# reference counting, so the default runs a collection every few requests, and each one walks
# every young object; the older generations follow from it. Measured on the API under wrk
# (docs/PERFORMANCE.md): 8-12 % less CPU per request, +5-10 % requests per second, p99 halved
# (141 -> 65 ms on a hot show at 100 connections). The garbage that only the collector frees
# (reference cycles) waits a little longer: the API's peak RSS stays at ~95 MB. The relay and
# the consumers (run() below) pay the same: with the service's modules loaded, raw aio-pika
# spent 87 µs of CPU per confirmed publish with CPython's default thresholds and 57 with these
# (bench/broker_floor.py with the modules imported).
GC_THRESHOLDS = (100_000, 50, 1_000)


def tune_gc() -> None:
    """Collect cyclic garbage less often in a process that serves many short requests."""
    gc.set_threshold(*GC_THRESHOLDS)
