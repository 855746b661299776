"""ticket_provider: every BookingMade becomes a booking at the external ticket provider.

    POST {TICKET_PROVIDER_URL}/ticket/booking   Idempotency-Key: <booking_id>
    {"booking_id", "customer_address", "event_id", "number_of_tickets"}

The effect is outside our database, so no transaction can hold it and the inbox row together.
Exactly once in effect rests on the provider: every call for a booking, the first and any repeat
(a timeout whose request did arrive, a crash before the ack, a redelivery), carries the same
Idempotency-Key, and the provider books a key once. The inbox row, written after the provider
accepted, only spares it the repeat call when a message comes again.

2xx: done. 5xx, 408, 429, timeouts and refused connections: try again later (429 and 408 are
"later" by definition, not a refusal). Any other 4xx: the provider refuses this booking for good,
so to the dead-letter queue.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.failures import Rejected
from consumers.inbox import claim, transaction, was_applied
from service.db.tables import shows
from service.domain import BookingMade

NAME = "ticket_provider"
PATH = "/ticket/booking"
RETRY_LATER = frozenset({408, 429})
MAX_BODY_IN_ERROR = 200


class ProviderUnavailable(Exception):
    """The provider did not take the booking this time; another attempt may succeed."""


def booking_request(event: BookingMade, dead_nation_id: uuid.UUID) -> dict[str, Any]:
    return {
        "booking_id": str(event.booking_id),
        "customer_address": event.customer_email,
        "event_id": str(dead_nation_id),
        "number_of_tickets": event.number_of_tickets,
    }


def worth_retrying(status: int) -> bool:
    return status >= 500 or status in RETRY_LATER


class TicketProvider:
    name = NAME

    def __init__(
        self, engine: AsyncEngine, http: aiohttp.ClientSession, base_url: str, timeout: float
    ) -> None:
        self._engine = engine
        self._http = http
        self._url = base_url.rstrip("/") + PATH
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # The event names the show, the provider wants its Dead Nation id: that lives only in
        # `shows` (the event contract is the booking service's, not the provider's). A show's
        # dead_nation_id never changes once created, so a cached answer is never stale.
        self._dead_nation_ids: dict[uuid.UUID, uuid.UUID] = {}

    async def check(self) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(select(1))

    async def handle(self, message_id: uuid.UUID, event: BookingMade) -> bool:
        async with transaction(self._engine) as conn:
            if await was_applied(conn, NAME, message_id):
                return False
        await self._book(event, await self._dead_nation_id(event.show_id))
        async with transaction(self._engine) as conn:
            await claim(conn, NAME, message_id)
        return True

    async def _dead_nation_id(self, show_id: uuid.UUID) -> uuid.UUID:
        if show_id not in self._dead_nation_ids:
            async with transaction(self._engine) as conn:
                found = await conn.scalar(
                    select(shows.c.dead_nation_id).where(shows.c.show_id == show_id)
                )
            if found is None:
                raise Rejected(f"show {show_id} does not exist")
            self._dead_nation_ids[show_id] = found
        return self._dead_nation_ids[show_id]

    async def _book(self, event: BookingMade, dead_nation_id: uuid.UUID) -> None:
        try:
            async with self._http.post(
                self._url,
                json=booking_request(event, dead_nation_id),
                headers={"Idempotency-Key": str(event.booking_id)},
                timeout=self._timeout,
            ) as response:
                if 200 <= response.status < 300:
                    return
                answer = f"HTTP {response.status}: {(await response.text())[:MAX_BODY_IN_ERROR]}"
        except TimeoutError:
            raise ProviderUnavailable(f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as error:
            raise ProviderUnavailable(f"{type(error).__name__}: {error}") from None
        if worth_retrying(response.status):
            raise ProviderUnavailable(answer)
        raise Rejected(f"provider refused the booking: {answer}")
