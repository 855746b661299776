"""Typed app and request state keys: what the handlers may reach, set up by the app factory."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.api.readiness import DatabaseReadiness
from service.coalescer import Booker

# Sessions at the default isolation for everything but bookings: reads, and creating a show.
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
BOOKER = web.AppKey("booker", Booker)
READINESS = web.AppKey("readiness", DatabaseReadiness)
# Seconds a request body may take to arrive (HTTP_BODY_TIMEOUT).
BODY_TIMEOUT = web.AppKey("body_timeout", float)
# The OpenAPI document and the /docs page, made once from the routes when the app is made.
OPENAPI = web.AppKey("openapi", dict[str, Any])
DOCS_PAGE = web.AppKey("docs_page", str)

# The booking a request asked for: a failure's log line names it (never the customer's data).
BOOKING_ID = web.RequestKey("booking_id", uuid.UUID)
