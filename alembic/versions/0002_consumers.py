"""consumers: the inbox of processed messages and the show_sales read model

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per message a consumer has applied, written in the same transaction as the
    # consumer's effect: a redelivered message finds its row and changes nothing. Keyed by
    # consumer too, because every consumer gets its own copy of each event.
    op.execute(
        """
        CREATE TABLE inbox (
            consumer     text NOT NULL,
            message_id   uuid NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, message_id)
        )
        """
    )
    # Tickets sold and bookings per show, built only from BookingMade events. No foreign key
    # to shows: a read model must not depend on the writer's tables, and `reconcile` compares
    # the two instead.
    op.execute(
        """
        CREATE TABLE show_sales (
            show_id      uuid PRIMARY KEY,
            tickets_sold integer NOT NULL CHECK (tickets_sold >= 0),
            bookings     integer NOT NULL CHECK (bookings >= 0),
            updated_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE show_sales")
    op.execute("DROP TABLE inbox")
