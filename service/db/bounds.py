"""How long a database session may wait: set by the service on every connection it opens.

A dead network path (a pulled cable, a NAT that forgot the flow) closes nothing: without
bounds, the client waits for an answer forever, and PostgreSQL keeps the session, its row locks
and its advisory locks, for as long as TCP allows (hours). So every connection carries bounds
on both sides, sent as server settings in the startup packet (no extra round trip):

- client side, `command_timeout`: a statement with no answer fails here, whatever the path does
  (asyncpg has no TCP keepalive of its own);
- server side, `lock_timeout` < `statement_timeout`: a lock wait ends as 55P03 (the booking's
  "busy"), a statement that runs too long as 57014;
- `idle_in_transaction_session_timeout`: a client gone mid-transaction frees its rows within
  seconds; shorter than `lock_timeout`, so whoever waits for those rows gets them before giving
  up, and the lost-commit lookup (service/db/lost_commit.py) gets a definite answer;
- `idle_session_timeout` (the relay only: pools keep idle connections on purpose): a relay whose
  path died loses its session, and with it the lead, to a standby;
- TCP keepalives and `tcp_user_timeout`: the server drops a peer that stopped answering.

Measured (docs in README "Faults"): a row lock of a vanished client is freed 2.0 s after its
last statement; a relay's lead 10 s after its last statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.common import timeouts

# Server-side detection of a peer that stopped answering: 5 s idle, then 3 probes 2 s apart;
# and at most 10 s for sent data to be acknowledged.
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
# A client that vanished inside a transaction holds its rows this long at most.
IDLE_IN_TRANSACTION = 2.0


@dataclass(frozen=True, slots=True)
class SessionBounds:
    """Seconds; None leaves the server's default (no limit)."""

    command: float  # client side: a statement without an answer fails after this
    statement: float
    idle_in_transaction: float
    lock: float | None = None
    idle_session: float | None = None

    def __post_init__(self) -> None:
        if self.lock is not None and not self.lock < self.statement:
            # Else a lock wait ends as a statement timeout (57014), not a lock timeout (55P03).
            raise ValueError("need lock < statement")
        if self.idle_session is not None and not self.command < self.idle_session:
            # A relay on a dead path must notice (command) before PostgreSQL gives its lead
            # away (idle_session): otherwise two relays publish at once.
            raise ValueError("need command < idle_session")

    def server_settings(self, application_name: str) -> dict[str, str]:
        settings = {
            "application_name": application_name,
            "statement_timeout": _ms(self.statement),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction),
            **KEEPALIVES,
        }
        if self.lock is not None:
            settings["lock_timeout"] = _ms(self.lock)
        if self.idle_session is not None:
            settings["idle_session_timeout"] = _ms(self.idle_session)
        return settings

    def connect_args(self, application_name: str) -> dict[str, Any]:
        """asyncpg.connect's keywords: the connect timeout, command_timeout, the settings."""
        return {
            "timeout": timeouts.CONNECT,
            "command_timeout": self.command,
            "server_settings": self.server_settings(application_name),
        }


def pooled(lock_wait: float) -> SessionBounds:
    """The API's and the consumers' pooled connections: a row lock is waited for `lock_wait`
    seconds (BOOKING_MAX_WAIT), a statement one more, an answer two more.

    With `lock_wait` above IDLE_IN_TRANSACTION (2 s; the default is 5 s), a vanished client's
    rows are freed before anyone waiting for them gives up; below it, they give up first (503).
    """
    return SessionBounds(
        command=lock_wait + 2.0,
        statement=lock_wait + 1.0,
        idle_in_transaction=IDLE_IN_TRANSACTION,
        lock=lock_wait,
    )


# The relay's connections (leading, standing by, purge, backlog). A leader runs a statement
# at least every RELAY_POLL_INTERVAL (<= 1 s), or after a batch's confirms (<= 8 s,
# RELAY_PUBLISH_TIMEOUT's cap): so 10 s of silence means its path is dead. It notices at its
# next statement (command, 5 s) and steps down before its session is ended (idle_session,
# 10 s after its last statement), which is when a standby can take the lead.
RELAY = SessionBounds(command=5.0, statement=4.0, idle_in_transaction=5.0, idle_session=10.0)
# The longest a relay's batch may wait for its confirms: the leader's connection says nothing
# meanwhile, and must not look dead.
RELAY_LONGEST_SILENCE = 8.0


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))
