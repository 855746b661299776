"""Outages: what counts as one, and riding them out.

One classification, used by every process: the API answers 503 + Retry-After for an outage, the
relay and the consumers back off and keep their work (a consumer spends no attempt of a message
on it). What is not an outage is a bug, and is logged with its traceback.

Riding out: back off (capped, jittered, never a busy loop), reconnect, and log one line when a
dependency goes away and one when it is back, not one per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
import asyncpg
import sqlalchemy.exc

T = TypeVar("T")

# SQLSTATEs of a PostgreSQL that is going away, not there yet, full, or read-only after a
# failover; and of sessions our own bounds ended (idle in transaction, idle session): the
# session is gone either way. Class 08 (connection exceptions) is an outage as a whole.
# Not 57014 (a statement over statement_timeout): the session lives on, and a statement that is
# always too slow must not pass for an outage, which would keep its message forever.
OUTAGE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: terminated (restart, pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up, shutting down, or a standby
        "53300",  # too_many_connections
        "25006",  # read_only_sql_transaction: a standby promoted elsewhere, this one read-only
        "25P03",  # idle_in_transaction_session_timeout
        "57P05",  # idle_session_timeout
    }
)


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error, what the driver raised underneath it, and what caused that."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)  # SQLAlchemy's wrapper around the driver's error
        todo += [orig if isinstance(orig, BaseException) else None, current.__cause__]


def _is_database_outage_itself(error: BaseException) -> bool:
    # Refused, reset, unreachable; a connect, a command_timeout or our own bound ran out.
    if isinstance(error, OSError | TimeoutError):
        return True
    # No pooled connection free in time; a pooled connection found closed at checkout.
    if isinstance(error, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return True
    # SQLAlchemy saw the connection die under the statement (a cut, a restart, a terminated
    # session): whatever it wraps, an InterfaceError, an InternalError, a bare DBAPIError.
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    # Refusals that leave the connection as it was (invalidated=False): a server starting or
    # shutting down (57P03), full (53300), read-only (25006); and class 08.
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in OUTAGE_SQLSTATES)


def is_database_outage(error: BaseException) -> bool:
    """PostgreSQL is down, restarting, out of reach or refusing us for now: not our bug.

    The error itself, what SQLAlchemy wraps (`.orig`) and the `__cause__` chain all count: the
    asyncpg dialect raises a plain DBAPIError whose driver error has the SQLSTATE, and asyncpg
    raises 08003 with the server's 57P01 as its cause."""
    return any(_is_database_outage_itself(cause) for cause in causes(error))


# Refusals at connect: the server answered, so nothing of ours reached a session.
REFUSED_AT_CONNECT = frozenset({"57P03", "53300"})


def nothing_sent(error: BaseException) -> bool:
    """An outage met before anything reached PostgreSQL: no connection could be had (refused,
    unknown host, the server starting or full, no pooled connection free in time). Unlike a
    connection lost under a statement or a COMMIT, it leaves no doubt about what was done."""
    if isinstance(error, OSError) and not isinstance(error, TimeoutError):
        return True  # SQLAlchemy does not wrap connect errors; a lost session it does wrap
    if isinstance(error, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return True
    return any(getattr(cause, "sqlstate", None) in REFUSED_AT_CONNECT for cause in causes(error))


def lost_connection(error: BaseException, conn: asyncpg.Connection) -> bool:
    """An error on a plain asyncpg connection (the relay's) that PostgreSQL closed.

    On a closed connection asyncpg raises InterfaceError ("connection is closed") or, when a
    restart ends it mid-operation, InternalClientError ("cannot switch to state ..."): neither
    has a SQLSTATE, and both also mean a bug on an open connection. So they count as an outage
    only when the connection is in fact closed."""
    if is_database_outage(error):
        return True
    return conn.is_closed() and isinstance(
        error, asyncpg.InterfaceError | asyncpg.InternalClientError
    )


BROKER_ERRORS = (
    OSError,
    TimeoutError,
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
)


def is_broker_outage(error: BaseException) -> bool:
    """RabbitMQ is lost, refusing, hung, or closed the channel on us."""
    return isinstance(error, BROKER_ERRORS)


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    is_outage: Callable[[BaseException], bool]


POSTGRESQL = Dependency("PostgreSQL", is_database_outage)
RABBITMQ = Dependency("RabbitMQ", is_broker_outage)


def postgresql_on(conn: asyncpg.Connection) -> Dependency:
    """POSTGRESQL for steps on one plain asyncpg connection: see lost_connection."""
    return Dependency(POSTGRESQL.name, lambda error: lost_connection(error, conn))


class Fatal(Exception):
    """What no retry fixes (the configuration contradicts what is there): the process stops,
    saying so in one line, for its operator rather than its supervisor to deal with."""


class Unavailable(Exception):
    """PostgreSQL or RabbitMQ cannot be used right now; back off and reconnect."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"{what} unavailable: {error!r}")
        self.what = what
        self.__cause__ = error  # what happened, for whoever explains it


async def guarded(dependency: Dependency, step: Awaitable[T]) -> T:
    """Run one step against `dependency`; an outage of it becomes Unavailable."""
    async with guarding(dependency):
        return await step


@contextlib.asynccontextmanager
async def guarding(dependency: Dependency) -> AsyncIterator[None]:
    """`guarded` for a block: an outage of `dependency` inside it becomes Unavailable."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as error:
        if dependency.is_outage(error):
            raise Unavailable(dependency.name, error) from error
        raise


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


Explain = Callable[[BaseException], "str | None"]


class OutageLog:
    """One log line per state change of a process's dependencies.

    `explain` words an error as an operator needs it (service/common/dependencies.py: which
    dependency, at which address, what to do), or says None for a bug."""

    def __init__(
        self,
        log: logging.Logger,
        who: str,
        activity: str,
        explain: Explain = lambda _: None,
    ) -> None:
        self._log = log
        self._who = who
        self._activity = activity
        self._explain = explain
        self._problem: str | None = None
        self._what = ""
        self._since = 0.0

    def failed(self, error: Unavailable, delay: float) -> None:
        self._went(error.what, error.what, self._explain(error) or str(error), delay)

    def crashed(self, error: Exception, delay: float) -> None:
        """Not an outage: a dependency that is there but not set up (no database, no tables,
        a refused login) is one line, as an outage is; anything else is a bug, logged with its
        traceback (call from an except block)."""
        explained = self._explain(error)
        if explained is not None:
            self._went(explained, "the database", explained, delay)
            return
        self._log.exception("%s failed unexpectedly; restarting in %.1f s", self._who, delay)

    def _went(self, problem: str, what: str, line: str, delay: float) -> None:
        if self._problem == problem:
            self._log.debug("%s: %s; retrying in %.1f s", self._who, line, delay)
            return
        if self._problem is None:
            self._since = time.monotonic()
        self._problem = problem
        self._what = what
        self._log.warning("%s: %s; backing off (next try in %.1f s)", self._who, line, delay)

    def recovered(self) -> bool:
        """Log the way back; True if something had been away."""
        if self._problem is None:
            return False
        down = time.monotonic() - self._since
        self._log.info(
            "%s: %s is back after %.1f s; %s again", self._who, self._what, down, self._activity
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
    anything else for a bug; either way the next one starts after a growing pause. Fatal ends
    the loop: it is raised to the process. A session
    resets the backoff once it is up, so a long outage and a short one both back off from 0.1 s.
    """
    backoff = Backoff(max_backoff)
    while not stopping.is_set():
        try:
            await session(backoff)
        except Fatal:
            raise
        except Unavailable as error:
            delay = backoff.next_delay()
            outages.failed(error, delay)
            await sleep_unless(stopping, delay)
        except Exception as error:
            delay = backoff.next_delay()
            outages.crashed(error, delay)
            await sleep_unless(stopping, delay)
