"""One channel's acks: a batch acked with one frame when that settles exactly the batch.

A batch of 100 messages acked one by one is 100 basic.ack frames, each one encoded here and
decoded by RabbitMQ, on the same two cores as the consumer. basic.ack with multiple=True
settles every delivery of the channel up to its tag in one frame, but it must not settle a
delivery still being handled elsewhere (a redelivered message handled alone, a retry on its
way to the delay queue, one that arrived after the batch was taken): acked early, it would be
lost if its own transaction then failed.

AMQP 0-9-1 numbers a channel's deliveries 1, 2, 3, ... So the tags settled so far tell whether
every tag up to the batch's last is settled or in the batch; only then is one frame sent, else
one per message, as before. A tag missing from the record (a settlement not told) only costs
the single frame; a tag recorded that was not settled would lose a message, so a tag is
recorded only after its ack or reject was sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from aio_pika.abc import AbstractIncomingMessage

from service.common.outages import RABBITMQ, guarded

# Settled tags kept above the first unsettled one. Only a delivery never settled in a living
# channel (none is known) would hold them up; past this, batches are acked one by one.
MAX_SETTLED_AHEAD = 10_000


class ChannelAcks:
    """The delivery tags of one channel that are settled (acked, rejected or nacked).

    One per channel, made with it: the connection is not robust, so a channel that closes is
    never reopened under the same object (its tags would count from 1 again); a new session
    opens a new channel and makes a new ChannelAcks."""

    def __init__(self) -> None:
        self._floor = 1  # every tag below it is settled
        self._ahead: set[int] = set()  # settled tags above it

    def settled(self, tag: int | None) -> None:
        """`tag`'s ack or reject was sent."""
        if tag is None or tag < self._floor:
            return
        self._ahead.add(tag)
        while self._floor in self._ahead:
            self._ahead.remove(self._floor)
            self._floor += 1

    def settles_only(self, tags: set[int]) -> bool:
        """Whether an ack of max(tags) with multiple=True would settle these tags and no other
        delivery still unsettled."""
        last = max(tags)
        if len(self._ahead) > MAX_SETTLED_AHEAD or min(tags) < self._floor:
            return False
        settled_before_last = sum(1 for tag in self._ahead if tag <= last)
        return len(tags) + settled_before_last == last - self._floor + 1

    async def ack_all(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """Ack every one of `messages` (all of this channel): in one frame if that is safe.
        Raises Unavailable when RabbitMQ is away."""
        tags = {message.delivery_tag for message in messages if message.delivery_tag is not None}
        if len(tags) == len(messages) > 1 and self.settles_only(tags):  # each tagged, once
            last = max(messages, key=lambda message: message.delivery_tag or 0)
            await guarded(RABBITMQ, last.ack(multiple=True))
            for tag in tags:
                self.settled(tag)
            return
        for message in messages:
            await guarded(RABBITMQ, message.ack())
            self.settled(message.delivery_tag)
