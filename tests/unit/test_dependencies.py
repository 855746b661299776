"""What an operator is told when PostgreSQL or RabbitMQ is missing, and the bounds every
database connection carries."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest
import sqlalchemy.exc

from service.common.dependencies import RABBITMQ, Dependencies
from service.common.outages import Unavailable
from service.db import bounds
from service.settings import Settings, SettingsError

DEPENDENCIES = Dependencies(
    "postgresql+asyncpg://app:s3cret@db.example:6543/tickets",
    "amqp://app:s3cret@mq.example:5673/",
)


def wrapped(error: Exception) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.DBAPIError("SELECT 1", None, error)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            ConnectionRefusedError(111, "Connect call failed"),
            "PostgreSQL at db.example:6543 is not reachable (connection refused): start it"
            " there, or set DATABASE_URL to where it runs",
        ),
        (
            Unavailable("PostgreSQL", TimeoutError()),
            "PostgreSQL at db.example:6543 is not reachable (no answer in time): start it"
            " there, or set DATABASE_URL to where it runs",
        ),
        (
            wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
            "PostgreSQL at db.example:6543 is not reachable (starting up or shutting down):"
            " start it there, or set DATABASE_URL to where it runs",
        ),
        (
            asyncpg.InvalidCatalogNameError('database "tickets" does not exist'),
            "database 'tickets' does not exist on PostgreSQL at db.example:6543: run"
            " `python -m service migrate` (it creates it), or set DATABASE_URL",
        ),
        (
            wrapped(asyncpg.UndefinedTableError('relation "outbox" does not exist')),
            "database 'tickets' on PostgreSQL at db.example:6543 has no tables yet: run"
            " `python -m service migrate`",
        ),
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "app"'),
            "PostgreSQL at db.example:6543 refused the login of user 'app': check the user and"
            " password in DATABASE_URL",
        ),
    ],
)
def test_a_missing_database_is_one_line_naming_where_and_what_to_do(
    error: Exception, line: str
) -> None:
    told = DEPENDENCIES.explain(error)
    assert told == line
    assert "s3cret" not in told


def test_a_missing_broker_is_one_line_too() -> None:
    refused = aio_pika.exceptions.AMQPConnectionError(111, "Connect call failed")
    refused.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert DEPENDENCIES.explain(refused, talking_to=RABBITMQ) == (
        "RabbitMQ at mq.example:5673 is not reachable (connection refused): start it there,"
        " or set AMQP_URL to where it runs"
    )
    assert DEPENDENCIES.explain(Unavailable("RabbitMQ", TimeoutError())) == (
        "RabbitMQ at mq.example:5673 is not reachable (no answer in time): start it there,"
        " or set AMQP_URL to where it runs"
    )


def test_a_task_groups_single_error_is_explained_and_a_bug_is_not() -> None:
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ConnectionRefusedError()])
    assert "PostgreSQL at db.example:6543 is not reachable" in str(DEPENDENCIES.explain(group))
    assert DEPENDENCIES.explain(ValueError("a bug")) is None
    assert DEPENDENCIES.explain(wrapped(asyncpg.UniqueViolationError("dup"))) is None


def test_a_removed_variable_stops_the_process_saying_what_replaced_it() -> None:
    with pytest.raises(SettingsError, match=r"CONSUMER_QUEUE_PREFIX: no longer read.*EVENTS_EX"):
        Settings.from_env({"CONSUMER_QUEUE_PREFIX": "staging."})


def test_a_relay_publish_may_not_outlast_the_leaders_silence() -> None:
    with pytest.raises(SettingsError, match="RELAY_PUBLISH_TIMEOUT"):
        Settings.from_env({"RELAY_PUBLISH_TIMEOUT": "9"})
    assert Settings.from_env({}).relay_publish_timeout <= bounds.RELAY_LONGEST_SILENCE
    assert (bounds.RELAY.idle_session or 0) > bounds.RELAY_LONGEST_SILENCE + 1


def test_database_connections_bound_every_wait() -> None:
    pooled = bounds.pooled(5.0).connect_args("tickets")
    assert (pooled["timeout"], pooled["command_timeout"]) == (5.0, 7.0)
    assert pooled["server_settings"] == {
        "application_name": "tickets",
        "lock_timeout": "5000",
        "statement_timeout": "6000",
        "idle_in_transaction_session_timeout": "2000",
        "tcp_keepalives_idle": "5",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "10000",
    }
    relay = bounds.RELAY.connect_args("tickets-relay")
    assert relay["command_timeout"] == 5.0
    # The relay notices a dead path (command) before PostgreSQL gives its lead away.
    assert relay["server_settings"]["idle_session_timeout"] == "10000"
    assert "lock_timeout" not in relay["server_settings"]
    with pytest.raises(ValueError, match="command < idle_session"):
        bounds.SessionBounds(command=10, statement=4, idle_in_transaction=5, idle_session=10)
