"""`python -m tests.support.crashing_consumer`: `python -m consumers run show_sales`, except
that the process dies on the spot (os._exit, as a segfault or the OOM killer would end it: no
clean-up, no ack, no nack) when it handles the booking named in CRASH_ON_BOOKING."""

from __future__ import annotations

import os
import sys
import uuid

from consumers import show_sales
from consumers.__main__ import main
from service.domain import BookingEvent

CRASH_ON = uuid.UUID(os.environ["CRASH_ON_BOOKING"])
handle = show_sales.ShowSales.handle


async def crashing_handle(
    self: show_sales.ShowSales, message_id: uuid.UUID, event: BookingEvent
) -> bool:
    if event.booking_id == CRASH_ON:
        print(f"crashing on booking {CRASH_ON}", flush=True)
        os._exit(70)
    return await handle(self, message_id, event)


if __name__ == "__main__":
    show_sales.ShowSales.handle = crashing_handle  # type: ignore[method-assign]
    sys.exit(main(["run", show_sales.NAME]))
