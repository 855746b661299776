"""Test queues on the run's own exchange, and clean-up of what a run declared."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from service.broker import declare_events_exchange, unrouted_name


@dataclass
class Received:
    """Messages a test queue got, in arrival order."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    arrival_times: list[float] = field(default_factory=list)  # event loop time, per message

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m.body) for m in self.messages]

    def message_ids(self) -> list[str]:
        return [str(m.message_id) for m in self.messages]

    def booking_ids(self, before: float = float("inf")) -> set[str]:
        """The bookings whose events arrived before `before` (event loop time)."""
        return {
            json.loads(m.body)["booking_id"]
            for m, at in zip(self.messages, self.arrival_times, strict=True)
            if at < before
        }

    async def wait_for(self, count: int, within: float = 30.0) -> None:
        """Until at least `count` messages arrived; fails the test after `within` seconds."""
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def wait_for_all(self, message_ids: set[str], within: float = 30.0) -> None:
        """Until every one of `message_ids` arrived (repeats do not count twice)."""
        async with asyncio.timeout(within):
            while not message_ids <= set(self.message_ids()):
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def bound_queue(
    channel: AbstractChannel, exchange: str, routing_key: str = "#"
) -> AsyncIterator[Received]:
    """An exclusive queue bound to `exchange` that collects (and acks) everything it gets."""
    events = await declare_events_exchange(channel, exchange)
    queue: AbstractQueue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(events, routing_key)
    received = Received()

    async def collect(message: AbstractIncomingMessage) -> None:
        await message.ack()
        received.messages.append(message)
        received.arrival_times.append(asyncio.get_running_loop().time())
        received.arrived.set()

    tag = await queue.consume(collect)
    try:
        yield received
    finally:
        await queue.cancel(tag)


async def delete_run_objects(amqp_url: str, exchange: str, queues: list[str]) -> None:
    """Remove the exchanges and queues a test run declared, so runs leave nothing behind."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in [*queues, unrouted_name(exchange)]:
            await channel.queue_delete(name)
        for name in (exchange, unrouted_name(exchange)):
            await channel.exchange_delete(name)
