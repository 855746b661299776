"""ticket_provider: a booking's tickets at the external ticket provider, made and taken back.

    BookingMade      POST   {TICKET_PROVIDER_URL}/ticket/booking    Idempotency-Key: <booking_id>
                     {"booking_id", "customer_address", "event_id", "number_of_tickets"}
    BookingCanceled  DELETE {TICKET_PROVIDER_URL}/ticket/booking/{booking_id}
                                                                Idempotency-Key: <its own>

The booking's row (with its show's Dead Nation id) is read before any call, and decides:
- no such booking, or not the one the event describes: a forged event. Dead-lettered, no call.
- BookingMade of a confirmed booking: POST. Then the row is read again: if the booking was
  canceled meanwhile, its BookingCanceled may have reached the provider before this POST did,
  so this consumer sends a DELETE itself.
- BookingMade of a canceled booking (a cancellation that overtook its booking: the BookingMade
  was retried, or dead-lettered and redriven): no POST; a DELETE, which also takes back a ticket
  that an earlier attempt of this message may have made.
- BookingCanceled: DELETE (404 there: already gone). Of a booking that is not canceled: forged.
Whatever the order, the last call about a canceled booking is a DELETE made after its POST.

Keys: the POST's is the booking id (the same on every attempt: the provider books a key once).
A DELETE's key is its own, derived from the booking and the event that sends it, never the
POST's. The two DELETEs of one booking have different keys: if the BookingCanceled's DELETE came
first and found nothing (404), a provider that replays answers by key would answer the second
one 404 too, without deleting the ticket the POST made in between.

The effect is outside our database, so no transaction can hold it and the inbox row together.
Exactly once in effect rests on the provider's keys; the inbox row, written after the provider
answered, only spares it the repeat call when a message comes again.

2xx: done. 5xx, 408, 429, timeouts and refused connections: try again later (429 and 408 are
"later" by definition, not a refusal). Any other 4xx: the provider refuses for good, so to the
dead-letter queue.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.failures import Rejected
from consumers.inbox import claim, transaction, was_applied
from service.db.tables import bookings, shows
from service.domain import CANCELED, BookingCanceled, BookingEvent, BookingMade

NAME = "ticket_provider"
PATH = "/ticket/booking"
RETRY_LATER = frozenset({408, 429})
MAX_BODY_IN_ERROR = 200


class ProviderUnavailable(Exception):
    """The provider did not take the call this time; another attempt may succeed."""


@dataclass(frozen=True, slots=True)
class BookingRow:
    """The booking as our database has it, with its show's id at the provider."""

    booking_id: uuid.UUID
    show_id: uuid.UUID
    number_of_tickets: int
    customer_email: str
    status: str
    dead_nation_id: uuid.UUID

    def describes(self, event: BookingEvent) -> bool:
        return (self.show_id, self.number_of_tickets, self.customer_email) == (
            event.show_id,
            event.number_of_tickets,
            event.customer_email,
        )


def booking_request(booking: BookingRow) -> dict[str, Any]:
    return {
        "booking_id": str(booking.booking_id),
        "customer_address": booking.customer_email,
        "event_id": str(booking.dead_nation_id),
        "number_of_tickets": booking.number_of_tickets,
    }


def delete_key(event: BookingEvent) -> uuid.UUID:
    """The Idempotency-Key of a DELETE sent on behalf of `event` (see the module doc)."""
    if isinstance(event, BookingCanceled):
        return event.idempotency_key
    return uuid.uuid5(event.booking_id, f"{BookingMade.name} of a canceled booking")


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

    async def check(self) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(select(1))

    async def handle(self, message_id: uuid.UUID, event: BookingEvent) -> bool:
        async with transaction(self._engine) as conn:
            if await was_applied(conn, NAME, message_id):
                return False
        booking = await self._booking(event)
        if isinstance(event, BookingCanceled):
            if booking.status != CANCELED:
                raise Rejected(f"forged event: booking {event.booking_id} is not canceled")
            await self._delete(event)
        elif booking.status == CANCELED:
            await self._delete(event)
        else:
            await self._post(booking)
            if (await self._booking(event)).status == CANCELED:
                await self._delete(event)  # canceled while we booked: take the ticket back
        async with transaction(self._engine) as conn:
            await claim(conn, NAME, message_id)
        return True

    async def _booking(self, event: BookingEvent) -> BookingRow:
        """The booking's row; Rejected if the event does not describe a booking we have."""
        query = (
            select(
                bookings.c.booking_id,
                bookings.c.show_id,
                bookings.c.number_of_tickets,
                bookings.c.customer_email,
                bookings.c.status,
                shows.c.dead_nation_id,
            )
            .join(shows, shows.c.show_id == bookings.c.show_id)
            .where(bookings.c.booking_id == event.booking_id)
        )
        async with transaction(self._engine) as conn:
            row = (await conn.execute(query)).one_or_none()
        booking = None if row is None else BookingRow(*row)
        if booking is None or not booking.describes(event):
            raise Rejected(f"forged event: no booking {event.booking_id} like it")
        return booking

    async def _post(self, booking: BookingRow) -> None:
        await self._call(
            "POST", self._url, booking.booking_id, json=booking_request(booking), gone_ok=False
        )

    async def _delete(self, event: BookingEvent) -> None:
        url = f"{self._url}/{event.booking_id}"
        await self._call("DELETE", url, delete_key(event), json=None, gone_ok=True)

    async def _call(
        self, method: str, url: str, key: uuid.UUID, json: dict[str, Any] | None, gone_ok: bool
    ) -> None:
        """One call; returns on 2xx (and on 404 when `gone_ok`), raises otherwise."""
        try:
            async with self._http.request(
                method,
                url,
                json=json,
                headers={"Idempotency-Key": str(key)},
                timeout=self._timeout,
            ) as response:
                if 200 <= response.status < 300 or (gone_ok and response.status == 404):
                    return
                answer = f"HTTP {response.status}: {(await response.text())[:MAX_BODY_IN_ERROR]}"
        except TimeoutError:
            raise ProviderUnavailable(f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as error:
            raise ProviderUnavailable(f"{type(error).__name__}: {error}") from None
        if worth_retrying(response.status):
            raise ProviderUnavailable(answer)
        raise Rejected(f"provider refused {method} {url}: {answer}")
