"""shows, bookings and the transactional outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE shows (
            show_id           uuid PRIMARY KEY,
            dead_nation_id    uuid NOT NULL UNIQUE,
            number_of_tickets integer NOT NULL CHECK (number_of_tickets >= 0),
            tickets_booked    integer NOT NULL DEFAULT 0 CHECK (tickets_booked >= 0),
            start_time        timestamptz NOT NULL,
            title             text NOT NULL,
            venue             text NOT NULL,
            created_at        timestamptz NOT NULL DEFAULT now(),
            -- The last line of defence: even a buggy writer cannot overbook a show.
            CONSTRAINT shows_not_overbooked CHECK (tickets_booked <= number_of_tickets)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE bookings (
            booking_id        uuid PRIMARY KEY,
            show_id           uuid NOT NULL REFERENCES shows (show_id),
            number_of_tickets integer NOT NULL CHECK (number_of_tickets >= 1),
            customer_email    text NOT NULL,
            correlation_id    text NOT NULL,
            created_at        timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX bookings_show_id ON bookings (show_id)")
    op.execute(
        """
        CREATE TABLE outbox (
            id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id       uuid NOT NULL UNIQUE,
            routing_key    text NOT NULL,
            ordering_key   uuid NOT NULL,
            payload        jsonb NOT NULL,
            correlation_id text NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now(),
            published_at   timestamptz
        )
        """
    )
    # The relay scans only what is left to publish; published rows fall out of this index.
    op.execute("CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL")
    op.execute(
        "CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL"
    )
    # Wake the relay as soon as a booking commits; NOTIFY is delivered only at commit, and
    # one per statement is enough (the relay reads everything unpublished when woken).
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outbox', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE outbox")
    op.execute("DROP FUNCTION outbox_notify")
    op.execute("DROP TABLE bookings")
    op.execute("DROP TABLE shows")
