"""The API's bodies as pydantic models: requests parsed strictly, and the answers' shapes.

Request models are parsed strictly: JSON types must match (no "2", 2.0 or true for an int), and
every value must be one PostgreSQL can store, so a request the models accept never fails in the
database. The OpenAPI document (openapi.py) is generated from these models, answers included.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

import email_validator
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.networks import validate_email

MAX_INT = 2**31 - 1  # the database's integer; anything larger can't be a real ticket count
# Control characters (NUL, which PostgreSQL refuses in text, tab, newline, ...) have no place in
# a one-line name: refused, and the pattern tells clients so in the OpenAPI document.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    if _CONTROL_CHARACTER.search(value):
        raise ValueError("must not contain control characters (NUL, tab, newline, ...)")
    return value


Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_printable),
    Field(json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}),
]


# asyncpg sends Python's first and last instants as PostgreSQL's -infinity and infinity (and
# reads them back without a time zone): not a show's start, so they are outside the range too.
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def _storable(value: datetime) -> datetime:
    """PostgreSQL stores an instant: the time must exist in UTC within years 1-9999, what the
    driver can send. 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC."""
    try:
        instant = value.astimezone(UTC)
    except OverflowError:
        instant = _LAST
    if not _FIRST < instant < _LAST:
        raise ValueError(
            "must lie after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z"
        )
    return value


StartTime = Annotated[AwareDatetime, AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class NewShowBody(_Strict):
    """A show. The same dead_nation_id again with the same details is the same show; with
    other details, a conflict. title and venue: leading and trailing spaces are dropped."""

    dead_nation_id: UUID = Field(
        description="the show's id at Dead Nation",
        examples=["3fa85f64-5717-4562-b3fc-2c963f66afa6"],
    )
    number_of_tickets: int = Field(ge=0, le=MAX_INT, examples=[100])
    start_time: StartTime = Field(
        description="RFC 3339 with a UTC offset; a time that is not in years 1-9999 in UTC "
        "is refused",
        examples=["2026-12-31T20:00:00+01:00"],
    )
    title: Text = Field(examples=["New Year"])
    venue: Text = Field(examples=["Main Hall"])


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Plain ASCII: a dot-atom local part of the usual characters, LDH labels, an alphabetic TLD.
_PLAIN_EMAIL = re.compile(
    rf"(?P<local>[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*)@(?P<domain>(?:{_LABEL}\.)+[A-Za-z]{{2,63}})"
)
_SPECIAL_USE = tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)


def normalize_email(value: str) -> str:
    """What pydantic's EmailStr gives, without email-validator's ~20 µs (a tenth of a booking's
    CPU) for the plain ASCII addresses nearly every buyer has. Anything else (IDNA, quoted,
    unusual characters, special-use domains, too long) goes to email-validator, with its
    messages. tests/unit/test_email.py holds the two equal."""
    match = _PLAIN_EMAIL.fullmatch(value)
    if match is not None and len(value) <= 254 and len(match["local"]) <= 64:
        domain = match["domain"].lower()
        if (
            len(domain) <= 253
            and all(label[2:4] != "--" for label in domain.split("."))  # xn--: IDNA's rules
            and not any(domain == s or domain.endswith("." + s) for s in _SPECIAL_USE)
        ):
            return f"{match['local']}@{domain}"
    return validate_email(value)[1]


CustomerEmail = Annotated[
    str,
    AfterValidator(normalize_email),
    WithJsonSchema({"type": "string", "format": "email"}),
]


class BookTicketsBody(_Strict):
    show_id: UUID
    number_of_tickets: int = Field(ge=1, le=MAX_INT, examples=[2])
    # email-validator's rules, the 254-character limit of a deliverable address included.
    customer_email: CustomerEmail = Field(
        description="a deliverable address (checked with email-validator)",
        examples=["fan@example.com"],
    )

    def fingerprint(self) -> str:
        """The request as parsed, not as sent: bodies that differ only in key order, spacing
        or unknown fields are one request to an Idempotency-Key."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class _Answer(BaseModel):
    """An answer's body. No other fields: the document says exactly what is sent."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Answer):
    error: str = Field(description="what is wrong, naming the field when one is")


class ShowCreated(_Answer):
    show_id: UUID


class Show(_Answer):
    show_id: UUID
    dead_nation_id: UUID
    number_of_tickets: int
    start_time: datetime = Field(description="in UTC")
    title: str
    venue: str
    tickets_booked: int
    tickets_available: int


class BookingCreated(_Answer):
    booking_id: UUID = Field(description="made by the server")


class Booking(_Answer):
    booking_id: UUID
    show_id: UUID
    number_of_tickets: int
    customer_email: str
    created_at: datetime
    status: Literal["confirmed", "canceled"] = Field(description="canceled by DELETE")
    canceled_at: datetime | None = Field(description="when it was canceled; null if it is not")


class Status(_Answer):
    status: str


class Health(_Answer):
    status: str
    pid: int = Field(description="the process that answered (API_WORKERS > 1: which worker)")
