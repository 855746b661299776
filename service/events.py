"""The event contract on the wire: the JSON body of every event the relay publishes.

These models are the one definition of the payloads: the consumers parse with them (strictly:
a body they refuse is a poison message), and docs/asyncapi.yaml is generated from them
(`python -m service asyncapi`). The domain's dataclasses (service/domain.py) build the bodies.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=1_000)]


class _Strict(BaseModel):
    # extra="ignore": a producer adding a field must not poison every consumer.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class EventHeader(_Strict):
    id: uuid.UUID = Field(description="The event's id; also the AMQP message_id (dedupe key)")
    published_at: AwareDatetime = Field(description="When the booking committed (RFC 3339)")
    idempotency_key: uuid.UUID = Field(
        description=(
            "One effect downstream per key: the booking id for BookingMade; for BookingCanceled"
            " a key of its own, uuid5(booking_id, 'BookingCanceled')"
        )
    )


class BookingMadeBody(_Strict):
    """A booking was accepted and committed."""

    header: EventHeader
    booking_id: uuid.UUID
    show_id: uuid.UUID
    number_of_tickets: int = Field(ge=1, le=2**31 - 1)
    customer_email: NonEmpty


class BookingCanceledBody(BookingMadeBody):
    """A booking was canceled and its tickets went back to the show: the same fields as the
    BookingMade it undoes, with an id of its own. It leaves after that BookingMade."""


EVENT_BODIES: dict[str, type[_Strict]] = {
    "BookingMade": BookingMadeBody,
    "BookingCanceled": BookingCanceledBody,
}
