"""Typed app state keys: what the handlers may reach, set up by the app factory."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.coalescer import Booker

# Sessions at the default isolation for everything but bookings: reads, and creating a show.
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
BOOKER = web.AppKey("booker", Booker)
