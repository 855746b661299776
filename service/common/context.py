"""The context a unit of work carries through a process: its correlation id.

Set by whoever starts the work (the API's middleware for a request, the consumer runner for a
delivery) and read by the log filter (service/common/logs.py), so every line logged on the way
names what it belongs to.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

from service.common.ids import new_id

CORRELATION_HEADER = "Correlation-ID"
NO_CORRELATION_ID = "-"
# Anything a client sends ends up in logs and on the broker: keep it short and printable.
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:/@+=-]{1,128}$")

correlation_id: ContextVar[str] = ContextVar("correlation_id", default=NO_CORRELATION_ID)


def correlation_id_from(given: str | None) -> str:
    """The caller's correlation id if it is one we can safely carry, else a fresh one."""
    if given and _VALID_CORRELATION_ID.match(given):
        return given
    return f"gen-{new_id()}"
