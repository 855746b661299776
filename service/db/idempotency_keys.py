"""Expired idempotency keys, purged beside the relay (service/relay/purge.py).

The keys themselves are read and written inside the booking transaction (service/db/booking.py:
READ_KEYS, BOOK); this is the one statement that deletes them, on the relay's own connection.
"""

from __future__ import annotations

import asyncpg


async def purge_expired_keys(conn: asyncpg.Connection, older_than: float, limit: int) -> int:
    """Delete up to `limit` keys stored more than `older_than` seconds ago; returns how many.

    A short statement on old rows only, in created_at order (indexed): booking transactions
    insert new keys and never wait for it, and SKIP LOCKED leaves a row a transaction is
    overwriting (an expired key used again) to that transaction.
    """
    status = await conn.execute(
        """
        DELETE FROM idempotency_keys WHERE key IN (
            SELECT key FROM idempotency_keys
            WHERE created_at < now() - make_interval(secs => $1)
            ORDER BY created_at LIMIT $2
            FOR UPDATE SKIP LOCKED)
        """,
        older_than,
        limit,
    )
    return int(status.split()[-1])
