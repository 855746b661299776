"""Batches: many messages applied in one transaction, acked only after its commit.

Under a backlog, deliveries arrive faster than one transaction per message can take them (for
show_sales, every one of them updates the same row of a hot show, so they would queue on its
lock). Each delivery joins the pending list; whoever gets the turn takes what is pending, up to
CONSUMER_BATCH_MAX, and applies it in one transaction (consumer.handle_batch). No delivery
waits for a batch to fill: a batch is what arrived while the previous one ran, so a lone
message goes at once and a backlog forms batches by itself.

    parse each ──poison──▶ alone (Delivery.process: dead-letter queue at once)
      │
    handle_batch (one transaction) ──commit──▶ ack all (applied, or a duplicate): one frame
      │                                        when nothing else is unsettled below them
      ├── Unavailable ──▶ every message put back as it came (no attempt spent)
      └── anything else ──▶ each message alone, through Delivery.process: retried or
                            dead-lettered on its own, so the others still apply

Acks follow the commit: a crash before it leaves the messages unacked, the broker delivers them
again, and the inbox makes a copy of one that did commit harmless. What comes back delivered
before, or as a retry, is handled alone (Delivery.alone), so a message that crashes the process
or fails its transaction cannot take a batch of others with it again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from consumers.acks import ChannelAcks
from consumers.consumer import BatchConsumer, Claimable, ConsumerStats
from consumers.delivery import Delivery
from consumers.failures import Unavailable
from service.common.outages import RABBITMQ

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class _Waiting:
    delivery: Delivery
    done: asyncio.Future[None]  # its outcome: the exception its delivery task raises, if any


class Batches:
    """One consumer's deliveries, a batch per transaction, one batch at a time."""

    def __init__(self, consumer: BatchConsumer, batch_max: int, stats: ConsumerStats) -> None:
        self._consumer = consumer
        self._batch_max = batch_max
        self._stats = stats
        self._pending: deque[_Waiting] = deque()
        self._turn = asyncio.Lock()  # one batch at a time: they would queue on the rows anyway

    async def submit(self, delivery: Delivery) -> None:
        """Returns once the message is acked (or retried, dead-lettered, put back); raises what
        Delivery.process would have raised for it."""
        waiting = _Waiting(delivery, asyncio.get_running_loop().create_future())
        self._pending.append(waiting)
        try:
            while not waiting.done.done():
                async with self._turn:
                    if not waiting.done.done():
                        await self._run(self._take())
        except asyncio.CancelledError:
            # Given up (a stop past its drain time): not to be applied later by another batch,
            # perhaps of another session, whose channel could not ack it.
            if waiting in self._pending:
                self._pending.remove(waiting)
            raise
        waiting.done.result()

    def _take(self) -> list[_Waiting]:
        count = min(len(self._pending), self._batch_max)
        return [self._pending.popleft() for _ in range(count)]

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            await self._apply(batch)
        finally:
            for waiting in batch:  # cancelled midway: left unacked, the broker redelivers them
                if not waiting.done.done():
                    waiting.done.cancel()

    async def _apply(self, batch: list[_Waiting]) -> None:
        readable: list[tuple[_Waiting, Claimable]] = []
        for waiting in batch:
            parsed = waiting.delivery.parsed()
            if parsed is None:
                await _alone(waiting)
            else:
                readable.append((waiting, parsed))
        if not readable:
            return
        self._stats.count_batch(len(readable))
        try:
            applied = await self._consumer.handle_batch([claim for _, claim in readable])
        except Unavailable as error:
            await _put_back([waiting for waiting, _ in readable], error)
        except Exception as error:
            log.warning(
                "%s: a batch of %d failed (%r); its messages go one by one",
                self._consumer.name,
                len(readable),
                error,
            )
            for waiting, _ in readable:
                await _alone(waiting)
        else:
            await _ack(readable, applied)


async def _ack(readable: list[tuple[_Waiting, Claimable]], applied: set[uuid.UUID]) -> None:
    """After the commit, in one frame when nothing else of the channel is unsettled below the
    batch (consumers/acks.py). A message_id twice in the batch is applied for its first copy
    only."""
    by_channel: dict[ChannelAcks, list[_Waiting]] = {}
    for waiting, _ in readable:  # one channel, unless a session ended under the batch
        by_channel.setdefault(waiting.delivery.acks, []).append(waiting)
    for acks, waitings in by_channel.items():
        try:
            await acks.ack_all([waiting.delivery.message for waiting in waitings])
        except Exception as error:  # Unavailable: each delivery task ends with it
            for waiting in waitings:
                waiting.done.set_exception(error)
    for waiting, (message_id, event) in readable:
        first = message_id in applied
        applied.discard(message_id)
        if not waiting.done.done():
            waiting.delivery.counted(first, message_id, event)
            waiting.done.set_result(None)


async def _put_back(batch: list[_Waiting], error: Unavailable) -> None:
    """Our PostgreSQL is away: each message goes back as it came, and its delivery task ends
    with the error, so the session ends and reconnects when the database is back."""
    for waiting in batch:
        if error.what != RABBITMQ.name:  # with RabbitMQ away, no use trying: left unacked
            try:
                await waiting.delivery.put_back()
            except Unavailable as broker_away:
                error = broker_away  # and so for the messages after this one
        waiting.done.set_exception(error)


async def _alone(waiting: _Waiting) -> None:
    await _settle(waiting, waiting.delivery.process())


async def _settle(waiting: _Waiting, step: Coroutine[Any, Any, None]) -> None:
    """Run one message's step; its outcome goes to the delivery task waiting for it."""
    try:
        await step
    except Exception as error:  # Unavailable, or a bug: the delivery task handles it as ever
        waiting.done.set_exception(error)
    else:
        waiting.done.set_result(None)
