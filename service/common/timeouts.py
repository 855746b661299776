"""Timeouts every process shares, in seconds: one value per kind of wait, defined once.

Settings cover what an operator tunes (a publish's confirm, a provider call); these are the
bounds nobody should have to tune, but every wait must have.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# Opening a connection to PostgreSQL or RabbitMQ: fail fast, the caller backs off and retries.
CONNECT = 5.0
# Closing one: a peer that stopped answering must not hang the way out.
CLOSE = 2.0
# A pooled database connection to become free: a buyer waiting longer is better told 503.
POOL_CHECKOUT = 5.0
# The broker's confirm of a copy the consumers publish (a retry, a dead letter, a redrive).
BROKER_CONFIRM = 10.0
# One request to RabbitMQ that is not a publish (declaring, binding, consuming, the prefetch).
BROKER_CALL = 5.0
# AMQP heartbeat asked of RabbitMQ (unless AMQP_URL says `heartbeat=`): a dead path to the
# broker is noticed after three missed ones, ~18 s, instead of ~3 minutes with its default 60 s.
BROKER_HEARTBEAT = 5

# A booking request is answered within BOOKING_MAX_WAIT (its turn in the queue) plus
# ANSWER_GRACE, whatever the database does. Its transaction runs at most BOOKING_MAX_WAIT +
# TRANSACTION_GRACE (its lock waits end at BOOKING_MAX_WAIT: busy), and when it fails for an
# outage, finding out whether it committed takes at most LOST_COMMIT_LOOKUP more.
TRANSACTION_GRACE = 2.0
LOST_COMMIT_LOOKUP = 3.0
ANSWER_GRACE = TRANSACTION_GRACE + LOST_COMMIT_LOOKUP


async def within(seconds: float, step: Awaitable[T]) -> T:
    """`step`'s result, or TimeoutError after `seconds`, without waiting for it to clean up.

    asyncio.timeout would wait for the cancelled step to unwind, and a database call on a dead
    path unwinds slowly (SQLAlchemy's rollback and close take seconds more): here it unwinds in
    the background, and the caller has its answer on time."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    _unwinding.add(task)
    task.add_done_callback(_unwound)
    raise TimeoutError(f"no answer within {seconds:.1f} s")


_unwinding: set[asyncio.Future[Any]] = set()  # abandoned steps still unwinding: kept alive


def _unwound(task: asyncio.Future[Any]) -> None:
    _unwinding.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("an abandoned step ended with %r", task.exception())
