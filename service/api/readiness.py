"""GET /ready: does PostgreSQL answer? Told within 2 s, whatever the database does.

On a dead network path a query is never answered: asyncio.timeout around it would still wait
for SQLAlchemy to give the connection up (seconds more), and a probe every second would pile
up stuck checks, each holding a pooled connection. So one check runs at a time; a probe waits
at most READY_WITHIN for it, and a probe that comes while it still runs waits for the same one.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

READY_WITHIN = 2.0


class DatabaseReadiness:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], within: float = READY_WITHIN
    ) -> None:
        self._sessions = sessions
        self._within = within
        self._check: asyncio.Future[None] | None = None

    async def problem(self) -> str | None:
        """None when PostgreSQL answered; else why not, in a few words."""
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._ask())
            self._check.add_done_callback(_retrieved)
        try:
            await asyncio.wait_for(asyncio.shield(self._check), self._within)
        except TimeoutError:
            return f"database unavailable: no answer within {self._within:g} s"
        except Exception as error:  # any failure to answer means not ready
            return f"database unavailable: {type(error).__name__}"
        return None

    async def _ask(self) -> None:
        async with self._sessions() as session:
            await session.execute(text("SELECT 1"))


def _retrieved(check: asyncio.Future[None]) -> None:
    # Its error is told to whoever waited; a check nobody waited for any more ends quietly.
    if not check.cancelled():
        check.exception()
