"""booking lifecycle (cancellation, idempotency keys) and trace context on the outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A booking is confirmed until it is canceled; canceled_at is set exactly when it is.
    # shows.tickets_booked counts confirmed bookings only.
    op.execute(
        """
        ALTER TABLE bookings
            ADD COLUMN status text NOT NULL DEFAULT 'confirmed'
                CHECK (status IN ('confirmed', 'canceled')),
            ADD COLUMN canceled_at timestamptz,
            ADD CONSTRAINT bookings_canceled_at_iff_canceled
                CHECK ((status = 'canceled') = (canceled_at IS NOT NULL))
        """
    )
    # The answer given to a POST /book-tickets with an Idempotency-Key, written in the same
    # transaction as the booking (or the refusal): a repeat with the same key and body gets
    # this answer again and books nothing. Keys expire; the purge walks created_at.
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            key          text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
            fingerprint  text NOT NULL,
            status       smallint NOT NULL,
            body         text NOT NULL,
            booking_id   uuid,
            created_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at)")
    # The W3C trace context of the request that wrote the row, sent on as the AMQP header
    # `traceparent`, so one trace runs from the HTTP request to the consumers. Empty for rows
    # written before tracing.
    op.execute("ALTER TABLE outbox ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox DROP COLUMN traceparent")
    op.execute("DROP TABLE idempotency_keys")
    op.execute(
        """
        ALTER TABLE bookings
            DROP CONSTRAINT bookings_canceled_at_iff_canceled,
            DROP COLUMN canceled_at,
            DROP COLUMN status
        """
    )
