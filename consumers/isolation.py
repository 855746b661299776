"""A careful start: after a crash, the messages the crashed process held come back one at a time,
so that a crash charges only the message that caused it.

The main queue's delivery limit counts, per message, the deliveries that ended without an ack.
A consumer process that crashes ends every delivery it holds that way, not only the one that
crashed it: with 32 messages prefetched, a message that crashes the process at once would take
its 31 neighbours to the dead-letter queue with it, crash after crash.

A quorum queue delivers the messages a consumer gave back before any other, and marks them
(x-delivery-count > 0). So every session starts consuming with a prefetch of 1: what a crashed
process held comes back one message at a time, and a message that crashes the process again is
alone in flight, the only one charged. At the first message never delivered before, the session
opens up: it subscribes again with CONSUMER_PREFETCH (RabbitMQ applies a prefetch to consumers
started after it is set, so the careful subscription is cancelled, its message in flight still
acked on the same channel).

Messages given back while a session runs at full prefetch (another process on the same queue
crashed) come to it among others: a crash then still charges whatever it held. One consumer
process per queue never meets that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

DELIVERY_COUNT = "x-delivery-count"  # set by a quorum queue on a delivery after the first

Deliver = Callable[[AbstractIncomingMessage], Awaitable[Any]]
Call = Callable[[Awaitable[Any]], Awaitable[Any]]  # one bounded request to the broker


def delivered_before(headers: Mapping[str, object]) -> bool:
    """The broker gave this message to a consumer before, which never acked it."""
    count = headers.get(DELIVERY_COUNT, 0)
    return isinstance(count, int) and not isinstance(count, bool) and count > 0


class CarefulSubscription:
    """One session's consumer of its main queue: prefetch 1 until a first-time message."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: AbstractQueue,
        deliver: Deliver,
        prefetch: int,
        call: Call,
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._deliver = deliver
        self._prefetch = prefetch
        self._call = call
        self._tag: str | None = None
        self._switching = asyncio.Lock()
        self.careful = True

    async def start(self) -> None:
        await self._subscribe(1)

    async def delivered(self, headers: Mapping[str, object]) -> None:
        """Before a message is handled: the first one never delivered before opens up."""
        if self.careful and not delivered_before(headers):
            async with self._switching:
                if self.careful:
                    self.careful = False
                    await self._cancel()
                    await self._subscribe(self._prefetch)

    async def stop(self) -> None:
        """No new deliveries; those in flight may still be acked."""
        async with self._switching:
            await self._cancel()

    async def _subscribe(self, prefetch: int) -> None:
        await self._call(self._channel.set_qos(prefetch_count=prefetch))
        self._tag = await self._call(self._queue.consume(self._deliver))

    async def _cancel(self) -> None:
        if self._tag is not None:
            tag, self._tag = self._tag, None
            await self._call(self._queue.cancel(tag))
