"""A relay running in-process for the length of a block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.relay import OutboxRelay


@asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        async with asyncio.timeout(10):
            await task
