"""Timeouts every process shares, in seconds: one value per kind of wait, defined once.

Settings cover what an operator tunes (a publish's confirm, a provider call); these are the
bounds nobody should have to tune, but every wait must have.
"""

from __future__ import annotations

# Opening a connection to PostgreSQL or RabbitMQ: fail fast, the caller backs off and retries.
CONNECT = 5.0
# Closing one: a peer that stopped answering must not hang the way out.
CLOSE = 2.0
# A pooled database connection to become free: a buyer waiting longer is better told 503.
POOL_CHECKOUT = 5.0
# The broker's confirm of a copy the consumers publish (a retry, a dead letter, a redrive).
BROKER_CONFIRM = 10.0
