"""Typed app state keys: what the handlers may reach, set up by the app factory."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.coalescer import Booker
from service.db.booking import BookingStats

READ_SESSIONS = web.AppKey("read_sessions", async_sessionmaker[AsyncSession])
BOOKER = web.AppKey("booker", Booker)
STATS = web.AppKey("stats", BookingStats)
