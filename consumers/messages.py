"""A booking's event as it arrives from RabbitMQ (BookingMade or BookingCanceled, told apart by
the AMQP `type`): parsed strictly, or refused as a poison message.

Pure: bytes in, an event or PoisonMessage out. A message refused here can never succeed, however
often it is retried, so the runner sends it straight to the dead-letter queue. A message without
a `type` is refused too: taking a cancellation for a booking would do the opposite of its intent.
"""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from service.common.validation import describe
from service.domain import BookingCanceled, BookingEvent, BookingMade
from service.events import BookingCanceledBody, BookingMadeBody


class PoisonMessage(ValueError):
    """The message is not an event this consumer can read; the text says why."""


# The AMQP type names the event: its body's model (the contract, service/events.py, from which
# docs/asyncapi.yaml is generated) and the domain event it becomes.
EVENTS: dict[str, tuple[type[BookingMadeBody], type[BookingEvent]]] = {
    BookingMade.name: (BookingMadeBody, BookingMade),
    BookingCanceled.name: (BookingCanceledBody, BookingCanceled),
}


def parse_event(
    body: bytes, message_id: str | None, event_type: str | None
) -> tuple[uuid.UUID, BookingEvent]:
    """The deduplication key and the event, or PoisonMessage.

    The key is the AMQP message_id (the contract sets it to header.id); a message without one
    falls back to header.id, so a producer that forgot the property is still deduplicated.
    """
    known = EVENTS.get(event_type or "")
    if known is None:
        shown = "none" if event_type is None else repr(event_type[:64])
        raise PoisonMessage(f"type {shown} is not one of {', '.join(EVENTS)}")
    model, kind = known
    try:
        parsed = model.model_validate_json(body)
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
