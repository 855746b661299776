"""`python -m tests.support.crashing_consumer`: `python -m consumers run show_sales`, except
that the process dies on the spot (os._exit, as a segfault or the OOM killer would end it: no
clean-up, no ack, no nack) when it handles the booking named in CRASH_ON_BOOKING, alone or in a
batch. In a batch it dies inside the batch's transaction, its messages claimed in the inbox
but not committed: what a crash before the commit leaves."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence

from consumers import show_sales
from consumers.__main__ import main
from consumers.consumer import Claimable
from consumers.inbox import claim_many, transaction
from service.domain import BookingEvent

CRASH_ON = uuid.UUID(os.environ["CRASH_ON_BOOKING"])
handle = show_sales.ShowSales.handle
handle_batch = show_sales.ShowSales.handle_batch


def crash(batch: int = 1) -> None:
    print(f"crashing on booking {CRASH_ON} in a batch of {batch}", flush=True)
    os._exit(70)


async def crashing_handle(
    self: show_sales.ShowSales, message_id: uuid.UUID, event: BookingEvent
) -> bool:
    if event.booking_id == CRASH_ON:
        crash()
    return await handle(self, message_id, event)


async def crashing_handle_batch(
    self: show_sales.ShowSales, messages: Sequence[Claimable]
) -> set[uuid.UUID]:
    if any(event.booking_id == CRASH_ON for _, event in messages):
        async with transaction(self._engine) as conn:
            await claim_many(conn, show_sales.NAME, [message_id for message_id, _ in messages])
            crash(len(messages))
    return await handle_batch(self, messages)


if __name__ == "__main__":
    show_sales.ShowSales.handle = crashing_handle  # type: ignore[method-assign]
    show_sales.ShowSales.handle_batch = crashing_handle_batch  # type: ignore[method-assign]
    sys.exit(main(["run", show_sales.NAME]))
