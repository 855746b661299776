"""The booking rules: pure, no I/O. The capacity rule lives here and nowhere else.

A batch of requests for one show or several (see service/coalescer.py) holds bookings and
cancellations; `decide_for_shows` takes them per show in arrival order: a booking takes seats if
they are there, a cancellation gives its booking's seats back. The idempotency keys of a batch
are sorted out before that, in service/idempotency.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from service.common.ids import new_id

BOOKING_MADE = "BookingMade"
BOOKING_CANCELED = "BookingCanceled"
CONFIRMED = "confirmed"
CANCELED = "canceled"


class DomainError(Exception):
    """A request the rules refuse; the API maps each subclass to one HTTP status."""

    message = "request refused"

    def __str__(self) -> str:
        return self.message


class NotEnoughSeats(DomainError):
    message = "not enough seats available"


class ShowNotFound(DomainError):
    message = "show not found"


class BookingNotFound(DomainError):
    message = "booking not found"


class IdempotencyKeyReused(DomainError):
    message = "this Idempotency-Key was already used with a different request body"


class ContentionExhausted(DomainError):
    """Serialization retries ran out; the caller may try again shortly."""

    message = "the show is busy, please retry"


class TooManyWaiting(DomainError):
    """This process already has as many booking requests waiting as it may hold."""

    message = "too many bookings waiting, please retry"


class OutcomeUnknown(DomainError):
    """The database stopped answering while a booking (or a cancellation) was being committed,
    and could not be asked afterwards whether it was: it may have been done. Never told as
    "please retry"."""

    message = (
        "the database stopped answering while this was being committed, and could not be asked"
        " since: it may have been done"
    )


class ShowConflict(DomainError):
    """A show with this dead_nation_id exists, with other details: the first one stands."""

    message = "a show with this dead_nation_id exists with other details"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's Idempotency-Key, with a fingerprint of the request body it came with."""

    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class BookingRequest:
    show_id: uuid.UUID
    number_of_tickets: int
    # Customer data: kept out of reprs, which end up in logs and error messages.
    customer_email: str = field(repr=False)
    correlation_id: str
    booking_id: uuid.UUID = field(default_factory=new_id)
    key: IdempotencyKey | None = None
    # The W3C trace context of the request, carried with its event to the consumers.
    traceparent: str | None = None

    @property
    def request_id(self) -> uuid.UUID:
        """Tells the requests of a batch apart: a new booking's own id."""
        return self.booking_id


@dataclass(frozen=True, slots=True)
class CancelRequest:
    booking_id: uuid.UUID
    show_id: uuid.UUID  # the booking's show: its lane, and the counter it gives seats back to
    correlation_id: str
    # Two cancellations of one booking may share a batch: each needs its own answer.
    request_id: uuid.UUID = field(default_factory=new_id)
    traceparent: str | None = None  # as a BookingRequest's


Request = BookingRequest | CancelRequest


@dataclass(frozen=True, slots=True)
class Booking:
    """A booking as stored: confirmed until it is canceled."""

    booking_id: uuid.UUID
    show_id: uuid.UUID
    number_of_tickets: int
    customer_email: str = field(repr=False)  # customer data: not in reprs
    created_at: datetime
    status: str = CONFIRMED
    canceled_at: datetime | None = None

    @property
    def is_canceled(self) -> bool:
        return self.status == CANCELED

    def canceled(self, at: datetime) -> Booking:
        return replace(self, status=CANCELED, canceled_at=at)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The answer a keyed request was given (status and JSON body), replayed as it was."""

    status: int
    body: str
    booking_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Capacity:
    number_of_tickets: int
    tickets_booked: int

    @property
    def available(self) -> int:
        return self.number_of_tickets - self.tickets_booked


@dataclass(frozen=True, slots=True)
class Cancellation:
    request: CancelRequest
    booking: Booking  # as it is once the request is answered: canceled


@dataclass(frozen=True, slots=True)
class BatchDecision:
    accepted: list[BookingRequest]
    rejected: list[BookingRequest]
    # Requests for a show that does not exist: refused on their own, not with their batch.
    unknown_show: list[BookingRequest] = field(default_factory=list)
    canceled: list[Cancellation] = field(default_factory=list)  # canceled by this batch
    unchanged: list[Cancellation] = field(default_factory=list)  # were canceled before
    missing: list[CancelRequest] = field(default_factory=list)  # no such booking
    # Answered from an Idempotency-Key's stored answer (service/idempotency.py), by request_id.
    replayed: dict[uuid.UUID, StoredAnswer] = field(default_factory=dict)
    key_reused: list[BookingRequest] = field(default_factory=list)

    @property
    def tickets_accepted(self) -> int:
        return sum(r.number_of_tickets for r in self.accepted)

    @property
    def writes(self) -> bool:
        """Whether the batch books or cancels anything."""
        return bool(self.accepted or self.canceled)

    def tickets_by_show(self) -> dict[uuid.UUID, int]:
        """Each show's change of tickets booked: bookings add, cancellations give back."""
        tickets: dict[uuid.UUID, int] = {}
        for request in self.accepted:
            tickets[request.show_id] = tickets.get(request.show_id, 0) + request.number_of_tickets
        for done in self.canceled:
            show_id = done.booking.show_id
            tickets[show_id] = tickets.get(show_id, 0) - done.booking.number_of_tickets
        return tickets


class _Deciding:
    """One show's requests taken in arrival order, against its seats left."""

    def __init__(
        self, available: int, bookings: Mapping[uuid.UUID, Booking], now: datetime | None
    ) -> None:
        self.available = available
        self.bookings = dict(bookings)  # updated as this batch cancels
        self.now = now
        self.decision = BatchDecision([], [])

    def take(self, request: Request) -> None:
        if isinstance(request, CancelRequest):
            self.cancel(request)
        elif request.number_of_tickets <= self.available:
            self.decision.accepted.append(request)
            self.available -= request.number_of_tickets
        else:
            self.decision.rejected.append(request)

    def cancel(self, request: CancelRequest) -> None:
        booking = self.bookings.get(request.booking_id)
        if self.now is None:
            raise ValueError("deciding a cancellation needs the time it happens at")
        if booking is None:
            self.decision.missing.append(request)
        elif booking.is_canceled:  # nothing changes: the same answer as the first time
            self.decision.unchanged.append(Cancellation(request, booking))
        else:
            canceled = booking.canceled(self.now)
            self.bookings[request.booking_id] = canceled
            self.available += booking.number_of_tickets
            self.decision.canceled.append(Cancellation(request, canceled))


def decide(
    capacity: Capacity,
    requests: Sequence[Request],
    bookings: Mapping[uuid.UUID, Booking] | None = None,
    now: datetime | None = None,
) -> BatchDecision:
    """Take one show's requests in arrival order: accept every booking that still fits; a
    cancellation of a confirmed booking (in `bookings`) gives its seats back at `now`.

    This is exactly what serving the requests one by one would give: a request for 1 behind a
    refused request for 5 can still be accepted, and seats released by a cancellation go to the
    bookings that arrive after it.
    """
    deciding = _Deciding(capacity.available, bookings or {}, now)
    for request in requests:
        deciding.take(request)
    return deciding.decision


def decide_for_shows(
    capacities: Mapping[uuid.UUID, Capacity],
    requests: Sequence[Request],
    bookings: Mapping[uuid.UUID, Booking] | None = None,
    now: datetime | None = None,
) -> BatchDecision:
    """`decide` for a batch that may span several shows: each show's requests, in arrival order,
    against that show's own capacity. Bookings for a show missing from `capacities` are
    `unknown_show`. Accepted requests come grouped by show, each group in arrival order."""
    by_show: dict[uuid.UUID, list[Request]] = {}
    for request in requests:
        by_show.setdefault(request.show_id, []).append(request)
    parts: list[BatchDecision] = []
    for show_id, show_requests in by_show.items():
        capacity = capacities.get(show_id)
        if capacity is None:
            unknown = [r for r in show_requests if isinstance(r, BookingRequest)]
            missing = [r for r in show_requests if isinstance(r, CancelRequest)]
            parts.append(BatchDecision([], [], unknown, missing=missing))
        else:
            parts.append(decide(capacity, show_requests, bookings, now))
    return BatchDecision(
        accepted=[r for part in parts for r in part.accepted],
        rejected=[r for part in parts for r in part.rejected],
        unknown_show=[r for part in parts for r in part.unknown_show],
        canceled=[c for part in parts for c in part.canceled],
        unchanged=[c for part in parts for c in part.unchanged],
        missing=[r for part in parts for r in part.missing],
    )


# What a request gets: None (booked), a booking (a cancellation's answer), a stored answer
# (replayed for its Idempotency-Key), or the refusal to raise.
Outcome = None | Booking | StoredAnswer | DomainError


class PartlyDecided(Exception):
    """Part of a batch was decided (its transaction committed, its answer lost, the bookings
    found), and the rest failed with `error`: each request gets its own answer."""

    def __init__(self, decision: BatchDecision, error: Exception) -> None:
        super().__init__(f"batch partly decided; the rest failed: {error!r}")
        self.decision = decision
        self.error = error


def outcomes(decision: BatchDecision) -> dict[uuid.UUID, Outcome]:
    """Each request's outcome, by request_id."""
    found: dict[uuid.UUID, Outcome] = {r.request_id: None for r in decision.accepted}
    found.update((r.request_id, NotEnoughSeats()) for r in decision.rejected)
    found.update((r.request_id, ShowNotFound()) for r in decision.unknown_show)
    found.update((c.request.request_id, c.booking) for c in decision.canceled)
    found.update((c.request.request_id, c.booking) for c in decision.unchanged)
    found.update((r.request_id, BookingNotFound()) for r in decision.missing)
    found.update(decision.replayed)
    found.update((r.request_id, IdempotencyKeyReused()) for r in decision.key_reused)
    return found


@dataclass(frozen=True, slots=True)
class BookingEvent:
    """What a booking's events carry, in the shape of the event contract."""

    name: ClassVar[str]
    event_id: uuid.UUID
    published_at: datetime
    booking_id: uuid.UUID
    show_id: uuid.UUID
    number_of_tickets: int
    customer_email: str = field(repr=False)  # customer data: not in reprs

    @property
    def idempotency_key(self) -> uuid.UUID:
        """One booking is one effect downstream; consumers and the ticket provider
        deduplicate on this key."""
        return self.booking_id

    def contract(self) -> dict[str, Any]:
        """The body the event contract describes, with its ids as UUIDs and its time as a
        datetime: orjson (service/common/encoding.py) writes those as str() and isoformat()
        would, without making the strings first (a third of an outbox row's cost)."""
        return {
            "header": {
                "id": self.event_id,
                "published_at": self.published_at,
                "idempotency_key": self.idempotency_key,
            },
            "booking_id": self.booking_id,
            "show_id": self.show_id,
            "number_of_tickets": self.number_of_tickets,
            "customer_email": self.customer_email,
        }

    def body(self) -> dict[str, Any]:
        """The same body in JSON's own types, as a consumer reads it."""
        return _json_types(self.contract())


def _json_types(body: dict[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in body.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return _json_types(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class BookingMade(BookingEvent):
    """Every accepted booking publishes one."""

    name: ClassVar[str] = BOOKING_MADE

    @classmethod
    def for_booking(cls, request: BookingRequest, committed_at: datetime) -> BookingMade:
        return cls(
            event_id=new_id(),
            published_at=committed_at,
            booking_id=request.booking_id,
            show_id=request.show_id,
            number_of_tickets=request.number_of_tickets,
            customer_email=request.customer_email,
        )


@dataclass(frozen=True, slots=True)
class BookingCanceled(BookingEvent):
    """Undoes the BookingMade of the same booking: the same fields, an id of its own."""

    name: ClassVar[str] = BOOKING_CANCELED

    @property
    def idempotency_key(self) -> uuid.UUID:
        # Not the booking's: the cancellation is an effect of its own, once per booking.
        return cancellation_key(self.booking_id)

    @classmethod
    def for_booking(cls, booking: Booking, committed_at: datetime) -> BookingCanceled:
        return cls(
            event_id=new_id(),
            published_at=committed_at,
            booking_id=booking.booking_id,
            show_id=booking.show_id,
            number_of_tickets=booking.number_of_tickets,
            customer_email=booking.customer_email,
        )


def cancellation_key(booking_id: uuid.UUID) -> uuid.UUID:
    """The idempotency key of a booking's cancellation: the same every time it is derived."""
    return uuid.uuid5(booking_id, BOOKING_CANCELED)
