"""Riding out a lost PostgreSQL or RabbitMQ: the error, the backoff, and the log of it.

The relay and the consumer runner both keep going through outages: they back off (capped,
jittered, never a busy loop), reconnect, and log one line when a dependency goes away and one
when it is back, not one per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable


class Unavailable(Exception):
    """PostgreSQL or RabbitMQ cannot be used right now; back off and reconnect."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"{what} unavailable: {error!r}")
        self.what = what


class Backoff:
    """Exponential, capped, with jitter so that restarting processes do not reconnect in step."""

    def __init__(self, cap: float, first: float = 0.1) -> None:
        self._cap = cap
        self._first = first
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._first * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 30)  # past the cap anyway; no float overflow
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._attempt = 0


class OutageLog:
    """One log line per state change of a process's dependencies."""

    def __init__(self, log: logging.Logger, who: str, activity: str) -> None:
        self._log = log
        self._who = who
        self._activity = activity
        self._problem: str | None = None
        self._since = 0.0

    def failed(self, error: Unavailable, delay: float) -> None:
        if self._problem == error.what:
            self._log.debug("%s: %s; retrying in %.1f s", self._who, error, delay)
            return
        if self._problem is None:
            self._since = time.monotonic()
        self._problem = error.what
        self._log.warning("%s: %s; backing off (next try in %.1f s)", self._who, error, delay)

    def crashed(self, delay: float) -> None:
        """A bug, not an outage: logged with its traceback (call from an except block)."""
        self._log.exception("%s failed unexpectedly; restarting in %.1f s", self._who, delay)

    def recovered(self) -> bool:
        """Log the way back; True if something had been away."""
        if self._problem is None:
            return False
        down = time.monotonic() - self._since
        self._log.info(
            "%s: %s is back after %.1f s; %s again", self._who, self._problem, down, self._activity
        )
        self._problem = None
        return True


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set meanwhile (a stop, a wake-up)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def run_until_stopped(
    session: Callable[[Backoff], Awaitable[None]],
    stopping: asyncio.Event,
    outages: OutageLog,
    max_backoff: float,
) -> None:
    """Run `session` again and again until `stopping` is set.

    A session ends by returning (on a stop) or by raising: Unavailable for a lost dependency,
    anything else for a bug; either way the next one starts after a growing pause. A session
    resets the backoff once it is up, so a long outage and a short one both back off from 0.1 s.
    """
    backoff = Backoff(max_backoff)
    while not stopping.is_set():
        try:
            await session(backoff)
        except Unavailable as error:
            delay = backoff.next_delay()
            outages.failed(error, delay)
            await sleep_unless(stopping, delay)
        except Exception:
            delay = backoff.next_delay()
            outages.crashed(delay)
            await sleep_unless(stopping, delay)
