"""The one classification of outages, as every process applies it."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg
import pytest
import sqlalchemy.exc

from service.common.outages import (
    POSTGRESQL,
    RABBITMQ,
    Unavailable,
    guarded,
    is_broker_outage,
    is_database_outage,
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


@pytest.mark.parametrize("sqlstate", ["23505", "42P01", "22P02", "40001"])
def test_other_sqlstates_are_not(sqlstate: str) -> None:
    assert not is_database_outage(_through_sqlalchemy(sqlstate))


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
