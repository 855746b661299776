"""The event loop every process runs on: uvloop (libuv), measured 2-6 % less CPU per booking
than asyncio's own loop (docs/PERFORMANCE.md). The tests run on asyncio's loop; the processes
they start (tests/e2e) on this one."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop."""
    return uvloop.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()
