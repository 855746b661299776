"""The one classification of outages, as every process applies it."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import aio_pika
import asyncpg
import pytest
import sqlalchemy.exc

from service.common.outages import (
    POSTGRESQL,
    RABBITMQ,
    Backoff,
    Fatal,
    OutageLog,
    Unavailable,
    guarded,
    is_broker_outage,
    is_database_outage,
    lost_connection,
    postgresql_on,
    run_until_stopped,
)


class _DriverError(Exception):
    """What SQLAlchemy's asyncpg dialect puts in `.orig`: an error with a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _through_sqlalchemy(sqlstate: str) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.DBAPIError("SELECT 1", None, _DriverError(sqlstate))


@pytest.mark.parametrize(
    "sqlstate", ["08006", "08001", "57P01", "57P02", "57P03", "53300", "25006", "25P03"]
)
def test_sqlstates_of_an_unreachable_or_refusing_database_are_outages(sqlstate: str) -> None:
    assert is_database_outage(_through_sqlalchemy(sqlstate))


@pytest.mark.parametrize("sqlstate", ["23505", "42P01", "22P02", "40001", "55P03", "57014"])
def test_other_sqlstates_are_not(sqlstate: str) -> None:
    # Not 57014 either: a statement over statement_timeout on a live session; one that is
    # always too slow must not pass for an outage (a consumer would keep it forever).
    assert not is_database_outage(_through_sqlalchemy(sqlstate))


@pytest.mark.parametrize(
    ("driver_error", "sqlstate"),
    [
        (asyncpg.CannotConnectNowError("the database system is starting up"), "57P03"),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), "53300"),
        (asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only"), "25006"),
    ],
)
def test_refusals_that_leave_the_connection_valid_are_outages(
    driver_error: Exception, sqlstate: str
) -> None:
    # As the asyncpg dialect raises them: a plain DBAPIError, connection_invalidated=False,
    # the SQLSTATE on the driver's error (fault-study.md).
    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", None, driver_error)
    assert not wrapped.connection_invalidated
    assert getattr(driver_error, "sqlstate", None) == sqlstate
    assert is_database_outage(wrapped)


def test_a_connection_that_died_under_sqlalchemy_is_an_outage_whatever_it_wraps() -> None:
    # A restart mid-operation: InternalError around asyncpg's InternalClientError ("cannot
    # switch to state 12"), which has no SQLSTATE; invalidated=True is what tells.
    restart = asyncpg.InternalClientError("cannot switch to state 12; another operation")
    invalidated = sqlalchemy.exc.InternalError("COMMIT", None, restart, connection_invalidated=True)
    assert is_database_outage(invalidated)
    assert not is_database_outage(sqlalchemy.exc.InternalError("COMMIT", None, restart))
    # A cut while idle in a transaction: InterfaceError "connection is closed", invalidated.
    closed = asyncpg.InterfaceError("cannot call Connection.execute(): connection is closed")
    assert is_database_outage(
        sqlalchemy.exc.InterfaceError("SELECT 1", None, closed, connection_invalidated=True)
    )
    # A pooled connection found closed at checkout (engine.py, _refuse_closed_connections).
    assert is_database_outage(sqlalchemy.exc.DisconnectionError("closed"))


def test_a_driver_misuse_is_a_bug_not_an_outage() -> None:
    misuse = asyncpg.InterfaceError("the number of query arguments cannot exceed 32767")
    assert not is_database_outage(misuse)
    assert not is_database_outage(sqlalchemy.exc.InterfaceError("SELECT", None, misuse))
    busy = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    assert not is_database_outage(busy)


def test_a_terminated_session_is_an_outage_through_the_cause_chain() -> None:
    # pg_terminate_backend mid-query: 08003 with the server's 57P01 as its cause, wrapped.
    terminated = asyncpg.AdminShutdownError("terminating connection due to administrator command")
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    lost.__cause__ = terminated
    assert is_database_outage(sqlalchemy.exc.DBAPIError("SELECT 1", None, lost))
    wrapper = RuntimeError("while booking")
    wrapper.__cause__ = sqlalchemy.exc.DBAPIError("SELECT 1", None, terminated)
    assert is_database_outage(wrapper)


class _Connection:
    """What lost_connection asks of an asyncpg connection: whether it is closed."""

    def __init__(self, closed: bool) -> None:
        self.closed = closed

    def is_closed(self) -> bool:
        return self.closed


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is"),
    ],
)
def test_plain_asyncpg_errors_without_sqlstate_are_outages_only_on_a_closed_connection(
    error: Exception,
) -> None:
    closed, open_ = cast(asyncpg.Connection, _Connection(True)), _Connection(False)
    assert lost_connection(error, closed)
    assert not lost_connection(error, cast(asyncpg.Connection, open_))
    assert not is_database_outage(error)
    assert postgresql_on(closed).is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    ],
)
def test_driver_and_pool_errors_of_an_outage(error: Exception) -> None:
    assert is_database_outage(error)


def test_a_bug_is_not_an_outage() -> None:
    assert not is_database_outage(ValueError("a bug"))
    assert not is_database_outage(asyncpg.UndefinedTableError('relation "x" does not exist'))
    assert not is_broker_outage(ValueError("a bug"))


def test_the_cause_counts() -> None:
    wrapper = RuntimeError("while booking")
    wrapper.__cause__ = ConnectionResetError()
    assert is_database_outage(wrapper)


def test_broker_outages() -> None:
    assert is_broker_outage(aio_pika.exceptions.AMQPConnectionError())
    assert is_broker_outage(ConnectionRefusedError())


async def test_guarded_turns_an_outage_into_unavailable_and_leaves_bugs_alone() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError()

    async def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(Unavailable, match="PostgreSQL unavailable"):
        await guarded(POSTGRESQL, refused())
    with pytest.raises(Unavailable, match="RabbitMQ unavailable"):
        await guarded(RABBITMQ, refused())
    with pytest.raises(KeyError):
        await guarded(POSTGRESQL, bug())
    assert await guarded(POSTGRESQL, asyncio.sleep(0, result=7)) == 7


async def test_a_fatal_error_ends_the_retry_loop_and_reaches_the_process() -> None:
    sessions = 0

    async def session(_: Backoff) -> None:
        nonlocal sessions
        sessions += 1
        if sessions == 1:
            raise Unavailable("RabbitMQ", ConnectionRefusedError())
        raise Fatal("a queue of that name exists with other arguments")

    outages = OutageLog(logging.getLogger("test"), "test", "testing")
    with pytest.raises(Fatal):
        async with asyncio.timeout(5):
            await run_until_stopped(session, asyncio.Event(), outages, max_backoff=0.01)
    assert sessions == 2
