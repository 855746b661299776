"""What to tell an operator when PostgreSQL or RabbitMQ is missing: one line, not a traceback.

Every command and process start that meets a dependency it cannot use says which one, at which
address, and what to do: start it, create or migrate the database, or set the variable:

    PostgreSQL at 127.0.0.1:5432 is not reachable (connection refused): start it there, or set
    DATABASE_URL to where it runs

Anything else (a bug) gets no such line: it keeps its traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aio_pika
from sqlalchemy.engine import make_url
from yarl import URL

if TYPE_CHECKING:
    from service.settings import Settings

from service.common.outages import (
    Fatal,
    Unavailable,
    causes,
    is_broker_outage,
    is_database_outage,
)

POSTGRESQL = "PostgreSQL"
RABBITMQ = "RabbitMQ"
NOT_MIGRATED = "42P01"  # undefined_table
NO_DATABASE = "3D000"  # invalid_catalog_name
REFUSED_LOGIN = frozenset({"28P01", "28000"})  # invalid_password, invalid_authorization


@dataclass(frozen=True, slots=True)
class Dependencies:
    """Where the process looks for its dependencies (the URLs stay in here: never told)."""

    database_url: str
    amqp_url: str

    def postgresql(self) -> str:
        url = make_url(self.database_url)
        return f"{POSTGRESQL} at {url.host or '127.0.0.1'}:{url.port or 5432}"

    def rabbitmq(self) -> str:
        url = URL(self.amqp_url)
        return f"{RABBITMQ} at {url.host or '127.0.0.1'}:{url.port or 5672}"

    def explain(self, error: BaseException, talking_to: str = POSTGRESQL) -> str | None:
        """One line if `error` means a dependency is missing or refuses us, else None.

        `talking_to` names the dependency an error that could come from either (a refused
        connection) came from."""
        error = _leaf(error)
        if isinstance(error, Fatal):
            return str(error)
        if isinstance(error, Unavailable):
            talking_to = error.what
        found = self._database_setup(error)
        if found is not None:
            return found
        if isinstance(error, aio_pika.exceptions.ProbableAuthenticationError):
            return f"{self.rabbitmq()} refused the login: check the user and password in AMQP_URL"
        return self._unreachable(error, talking_to)

    def _database_setup(self, error: BaseException) -> str | None:
        """The database is there but not as the service needs it."""
        database = make_url(self.database_url).database
        sqlstates = {getattr(cause, "sqlstate", None) for cause in causes(error)}
        if NO_DATABASE in sqlstates:
            return (
                f"database {database!r} does not exist on {self.postgresql()}: run"
                " `python -m service migrate` (it creates it), or set DATABASE_URL"
            )
        if NOT_MIGRATED in sqlstates:
            return (
                f"database {database!r} on {self.postgresql()} has no tables yet: run"
                " `python -m service migrate`"
            )
        if sqlstates & REFUSED_LOGIN:
            user = make_url(self.database_url).username
            return (
                f"{self.postgresql()} refused the login of user {user!r}: check the user and"
                " password in DATABASE_URL"
            )
        return None

    def _unreachable(self, error: BaseException, talking_to: str) -> str | None:
        if talking_to == RABBITMQ and (isinstance(error, Unavailable) or is_broker_outage(error)):
            return (
                f"{self.rabbitmq()} is not reachable ({_why(error)}): start it there, or set"
                " AMQP_URL to where it runs"
            )
        if isinstance(error, Unavailable) or is_database_outage(error):
            return (
                f"{self.postgresql()} is not reachable ({_why(error)}): start it there, or set"
                " DATABASE_URL to where it runs"
            )
        return None


def dependencies_of(settings: Settings) -> Dependencies:
    return Dependencies(
        settings.database_url.get_secret_value(), settings.amqp_url.get_secret_value()
    )


def _leaf(error: BaseException) -> BaseException:
    """The one error inside task groups' exception groups, if there is just one."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _why(error: BaseException) -> str:
    """What went wrong, in a few words and without a URL (which may carry a password)."""
    for cause in _reasons(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        if isinstance(cause, TimeoutError):
            return "no answer in time"
        sqlstate = getattr(cause, "sqlstate", None)
        if sqlstate == "57P03":
            return "starting up or shutting down"
        if sqlstate == "53300":
            return "too many connections"
    return type(error.__cause__ or error).__name__


def _reasons(error: BaseException) -> Iterator[BaseException]:
    yield from causes(error)
    context = error.__context__
    if context is not None and context is not error.__cause__:
        yield from causes(context)
