"""Request bodies, parsed strictly: JSON types must match (no "2", 2.0 or true for an int)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

MAX_INT = 2**31 - 1  # the database's integer; anything larger can't be a real ticket count
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class NewShowBody(_Strict):
    dead_nation_id: UUID
    number_of_tickets: int = Field(ge=0, le=MAX_INT)
    start_time: AwareDatetime
    title: Text
    venue: Text


class BookTicketsBody(_Strict):
    show_id: UUID
    number_of_tickets: int = Field(ge=1, le=MAX_INT)
    # email-validator also enforces the 254-character limit of a deliverable address.
    customer_email: EmailStr

    def fingerprint(self) -> str:
        """The request as parsed, not as sent: bodies that differ only in key order, spacing
        or unknown fields are one request to an Idempotency-Key."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
