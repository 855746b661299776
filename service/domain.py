"""The booking rules: pure, no I/O. The capacity rule lives here and nowhere else."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

BOOKING_MADE = "BookingMade"


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


class ContentionExhausted(DomainError):
    """Serialization retries ran out; the caller may try again shortly."""

    message = "the show is busy, please retry"


class TooManyWaiting(DomainError):
    """This process already has as many booking requests waiting as it may hold."""

    message = "too many bookings waiting, please retry"


class OutcomeUnknown(DomainError):
    """The database stopped answering while a booking was being committed, and could not be
    asked afterwards whether it was: the booking may exist. Never told as "please retry"."""

    message = "the database stopped answering while this booking was being made: it may exist"


class ShowConflict(DomainError):
    """A show with this dead_nation_id exists, with other details: the first one stands."""

    message = "a show with this dead_nation_id exists with other details"


@dataclass(frozen=True, slots=True)
class BookingRequest:
    show_id: uuid.UUID
    number_of_tickets: int
    # Customer data: kept out of reprs, which end up in logs and error messages.
    customer_email: str = field(repr=False)
    correlation_id: str
    booking_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # The W3C trace context of the request, carried with its event to the consumers.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Capacity:
    number_of_tickets: int
    tickets_booked: int

    @property
    def available(self) -> int:
        return self.number_of_tickets - self.tickets_booked


@dataclass(frozen=True, slots=True)
class BatchDecision:
    accepted: list[BookingRequest]
    rejected: list[BookingRequest]
    # Requests for a show that does not exist: refused on their own, not with their batch.
    unknown_show: list[BookingRequest] = field(default_factory=list)

    @property
    def tickets_accepted(self) -> int:
        return sum(r.number_of_tickets for r in self.accepted)

    def tickets_by_show(self) -> dict[uuid.UUID, int]:
        tickets: dict[uuid.UUID, int] = {}
        for request in self.accepted:
            tickets[request.show_id] = tickets.get(request.show_id, 0) + request.number_of_tickets
        return tickets


def decide(capacity: Capacity, requests: list[BookingRequest]) -> BatchDecision:
    """Accept, in arrival order, every request that still fits.

    This is exactly what serving the requests one by one would give: a request for 1 behind a
    refused request for 5 can still be accepted.
    """
    available = capacity.available
    accepted: list[BookingRequest] = []
    rejected: list[BookingRequest] = []
    for request in requests:
        if request.number_of_tickets <= available:
            accepted.append(request)
            available -= request.number_of_tickets
        else:
            rejected.append(request)
    return BatchDecision(accepted, rejected)


def decide_for_shows(
    capacities: Mapping[uuid.UUID, Capacity], requests: list[BookingRequest]
) -> BatchDecision:
    """`decide` for a batch that may span several shows: each show's requests, in arrival order,
    against that show's own capacity. Requests for a show missing from `capacities` are
    `unknown_show`. Accepted requests come grouped by show, each group in arrival order."""
    by_show: dict[uuid.UUID, list[BookingRequest]] = {}
    for request in requests:
        by_show.setdefault(request.show_id, []).append(request)
    accepted: list[BookingRequest] = []
    rejected: list[BookingRequest] = []
    unknown: list[BookingRequest] = []
    for show_id, show_requests in by_show.items():
        capacity = capacities.get(show_id)
        if capacity is None:
            unknown.extend(show_requests)
            continue
        decision = decide(capacity, show_requests)
        accepted.extend(decision.accepted)
        rejected.extend(decision.rejected)
    return BatchDecision(accepted, rejected, unknown)


@dataclass(frozen=True, slots=True)
class BookingMade:
    """The event every accepted booking publishes, in the shape of the event contract."""

    event_id: uuid.UUID
    published_at: datetime
    booking_id: uuid.UUID
    show_id: uuid.UUID
    number_of_tickets: int
    customer_email: str = field(repr=False)  # customer data: not in reprs

    @classmethod
    def for_booking(cls, request: BookingRequest, committed_at: datetime) -> BookingMade:
        return cls(
            event_id=uuid.uuid4(),
            published_at=committed_at,
            booking_id=request.booking_id,
            show_id=request.show_id,
            number_of_tickets=request.number_of_tickets,
            customer_email=request.customer_email,
        )

    def body(self) -> dict[str, Any]:
        return {
            "header": {
                "id": str(self.event_id),
                "published_at": self.published_at.isoformat(),
                # One booking is one effect downstream; consumers and the ticket provider
                # deduplicate on this key.
                "idempotency_key": str(self.booking_id),
            },
            "booking_id": str(self.booking_id),
            "show_id": str(self.show_id),
            "number_of_tickets": self.number_of_tickets,
            "customer_email": self.customer_email,
        }
