"""A booking's event as it arrives from RabbitMQ (BookingMade or BookingCanceled, told apart by
the AMQP `type`): parsed strictly, or refused as a poison message.

Pure: bytes in, an event or PoisonMessage out. A message refused here can never succeed, however
often it is retried, so the runner sends it straight to the dead-letter queue. A message without
a `type` is refused too: taking a cancellation for a booking would do the opposite of its intent.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from service.common.validation import describe
from service.domain import BookingCanceled, BookingEvent, BookingMade

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=1_000)]


class PoisonMessage(ValueError):
    """The message is not an event this consumer can read; the text says why."""


class _Strict(BaseModel):
    # extra="ignore": a producer adding a field must not poison every consumer.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class _Header(_Strict):
    id: uuid.UUID
    published_at: AwareDatetime


class _BookingEventBody(_Strict):
    header: _Header
    booking_id: uuid.UUID
    show_id: uuid.UUID
    number_of_tickets: int = Field(ge=1, le=2**31 - 1)
    customer_email: NonEmpty


EVENTS: dict[str, type[BookingEvent]] = {
    BookingMade.name: BookingMade,
    BookingCanceled.name: BookingCanceled,
}


def parse_event(
    body: bytes, message_id: str | None, event_type: str | None
) -> tuple[uuid.UUID, BookingEvent]:
    """The deduplication key and the event, or PoisonMessage.

    The key is the AMQP message_id (the contract sets it to header.id); a message without one
    falls back to header.id, so a producer that forgot the property is still deduplicated.
    """
    kind = EVENTS.get(event_type or "")
    if kind is None:
        shown = "none" if event_type is None else repr(event_type[:64])
        raise PoisonMessage(f"type {shown} is not one of {', '.join(EVENTS)}")
    try:
        parsed = _BookingEventBody.model_validate_json(body)
    except ValidationError as error:
        raise PoisonMessage(describe(error)) from None
    key = parsed.header.id if not message_id else _uuid(message_id)
    event = kind(
        event_id=parsed.header.id,
        published_at=parsed.header.published_at,
        booking_id=parsed.booking_id,
        show_id=parsed.show_id,
        number_of_tickets=parsed.number_of_tickets,
        customer_email=parsed.customer_email,
    )
    return key, event


def _uuid(message_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(message_id)
    except ValueError:
        raise PoisonMessage(f"message_id {message_id[:64]!r} is not a UUID") from None
