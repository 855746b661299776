"""Redelivered messages are handled alone, so that a crash charges only the message that caused it.

The main queue's delivery limit counts, per message, the deliveries that ended without an ack.
A consumer process that crashes ends every delivery it holds that way, not only the one that
crashed it: with 32 messages prefetched, a message that crashes the process at once would take
its 31 neighbours to the dead-letter queue with it, crash after crash.

So a message RabbitMQ delivers again after such an end (x-delivery-count > 0) is a suspect:

- a session starts careful, taking one message at a time (prefetch 1), since what a crashed
  process held comes back first; it opens up (CONSUMER_PREFETCH) at the first message that was
  never delivered before;
- a suspect arriving meanwhile narrows the prefetch to 1 again, waits for every other message
  in flight to finish (and be acked), and only then runs: if it crashes the process, it is the
  only message charged.

Two suspects delivered together (another process crashed and its messages came here at once)
run one after the other, and the one waiting is charged if the first crashes. One consumer
process per queue never meets that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

DELIVERY_COUNT = "x-delivery-count"  # set by a quorum queue on every delivery

SetPrefetch = Callable[[int], Awaitable[None]]


def delivered_before(headers: Mapping[str, object]) -> bool:
    """The broker gave this message to a consumer before, which never acked it."""
    count = headers.get(DELIVERY_COUNT, 0)
    return isinstance(count, int) and not isinstance(count, bool) and count > 0


class Isolation:
    """One consumer session's deliveries: suspects alone, the rest side by side."""

    def __init__(self, set_prefetch: SetPrefetch, prefetch: int) -> None:
        self._set_prefetch = set_prefetch
        self._prefetch = prefetch
        self._current = 0  # the prefetch the broker was last told; 0 until the session starts
        self._setting = asyncio.Lock()
        self._alone = asyncio.Lock()  # held by the suspect that runs
        self._others = 0  # messages in flight that are not suspects
        self._others_done = asyncio.Condition()

    async def start(self) -> None:
        """Before consuming: one message at a time, until a first-time message arrives."""
        await self._prefetch_to(1)

    @contextlib.asynccontextmanager
    async def handling(self, headers: Mapping[str, object]) -> AsyncIterator[None]:
        """Around the handling of one message, from its delivery to its ack."""
        if delivered_before(headers):
            async with self._alone:
                await self._prefetch_to(1)
                async with self._others_done:
                    await self._others_done.wait_for(lambda: self._others == 0)
                yield
            return
        self._others += 1
        try:
            if not self._alone.locked():  # a first-time message: back to full speed
                await self._prefetch_to(self._prefetch)
            yield
        finally:
            self._others -= 1
            async with self._others_done:
                self._others_done.notify_all()

    async def _prefetch_to(self, count: int) -> None:
        async with self._setting:
            if self._current != count:
                await self._set_prefetch(count)
                self._current = count
