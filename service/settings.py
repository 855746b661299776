"""Settings read once from the environment into a frozen object.

A bad value fails at start with a message naming the variable, instead of surfacing later as an
obscure connection error in the middle of a sale.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable in the environment has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/tickets"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "events"
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    # Worker processes for the API, all on one port (SO_REUSEPORT); the database stays the
    # source of truth, so several processes are as safe as one.
    api_workers: int = 1
    # Per-show coalescing: requests for one show queued while a transaction runs are booked
    # together in the next one. A batch is bounded so one transaction stays short.
    booking_coalescing: bool = True
    booking_batch_max: int = 200
    # Booking transactions one API process runs side by side; a show always uses the same lane,
    # and one transaction books a lane's queued requests for all its shows together. One lane
    # is fastest on the measured machines: concurrent transactions over many shows make
    # SERIALIZABLE's predicate locks (promoted to page locks) conflict, see docs/PERFORMANCE.md.
    booking_lanes: int = 1
    # Longest a request waits for its turn before it is answered 503 busy (nothing booked); also
    # the longest a booking statement waits for a row lock (lock_timeout).
    booking_max_wait: float = 5.0
    # Bounded retries of a transaction that lost a serialization race (SQLSTATE 40001/40P01).
    booking_max_attempts: int = 12
    db_pool_size: int = 10
    log_level: str = "INFO"
    # Outbox relay: rows per publishing batch, the polling fallback for lost NOTIFYs, how long
    # a publish may wait for its confirm, the cap of the reconnect backoff, and retention.
    relay_batch_size: int = 500
    relay_poll_interval: float = 0.5
    relay_publish_timeout: float = 5.0
    relay_max_backoff: float = 10.0
    outbox_retention: float = 86_400.0
    outbox_purge_interval: float = 60.0
    # Consumers: the external ticket provider (unset: the ticket_provider consumer is skipped),
    # attempts before a message is dead-lettered, the growing retry delays, prefetch, and a
    # prefix for queue names (tests use it to keep runs apart).
    ticket_provider_url: str = ""
    ticket_provider_timeout: float = 5.0
    consumer_max_attempts: int = 5
    consumer_retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000)
    consumer_prefetch: int = 32
    consumer_queue_prefix: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            database_url=read_env(
                env, "DATABASE_URL", str, d.database_url, url_with_scheme("postgresql")
            ),
            amqp_url=read_env(env, "AMQP_URL", str, d.amqp_url, url_with_scheme("amqp")),
            events_exchange=read_env(env, "EVENTS_EXCHANGE", str, d.events_exchange, non_empty),
            http_host=read_env(env, "HTTP_HOST", str, d.http_host, non_empty),
            http_port=read_env(env, "HTTP_PORT", int, d.http_port, between(0, 65535)),
            api_workers=read_env(env, "API_WORKERS", int, d.api_workers, between(1, 64)),
            booking_coalescing=read_env(
                env, "BOOKING_COALESCING", parse_bool, d.booking_coalescing, always_valid
            ),
            booking_batch_max=read_env(
                env, "BOOKING_BATCH_MAX", int, d.booking_batch_max, between(1, 10_000)
            ),
            booking_lanes=read_env(env, "BOOKING_LANES", int, d.booking_lanes, between(1, 64)),
            booking_max_wait=read_env(
                env, "BOOKING_MAX_WAIT", float, d.booking_max_wait, seconds(0.01, 300)
            ),
            booking_max_attempts=read_env(
                env, "BOOKING_MAX_ATTEMPTS", int, d.booking_max_attempts, between(1, 100)
            ),
            db_pool_size=read_env(env, "DB_POOL_SIZE", int, d.db_pool_size, between(1, 500)),
            log_level=read_env(env, "LOG_LEVEL", str.upper, d.log_level, log_level_name),
            relay_batch_size=read_env(
                env, "RELAY_BATCH_SIZE", int, d.relay_batch_size, between(1, 10_000)
            ),
            relay_poll_interval=read_env(
                env, "RELAY_POLL_INTERVAL", float, d.relay_poll_interval, seconds(0.01, 1.0)
            ),
            relay_publish_timeout=read_env(
                env, "RELAY_PUBLISH_TIMEOUT", float, d.relay_publish_timeout, seconds(0.1, 300)
            ),
            relay_max_backoff=read_env(
                env, "RELAY_MAX_BACKOFF", float, d.relay_max_backoff, seconds(0.1, 600)
            ),
            outbox_retention=read_env(
                env, "OUTBOX_RETENTION", float, d.outbox_retention, seconds(0, 10 * 365 * 86_400)
            ),
            outbox_purge_interval=read_env(
                env, "OUTBOX_PURGE_INTERVAL", float, d.outbox_purge_interval, seconds(0.1, 86_400)
            ),
            ticket_provider_url=read_env(
                env, "TICKET_PROVIDER_URL", str, d.ticket_provider_url, url_with_scheme("http")
            ),
            ticket_provider_timeout=read_env(
                env, "TICKET_PROVIDER_TIMEOUT", float, d.ticket_provider_timeout, seconds(0.1, 300)
            ),
            consumer_max_attempts=read_env(
                env, "CONSUMER_MAX_ATTEMPTS", int, d.consumer_max_attempts, between(1, 100)
            ),
            consumer_retry_delays_ms=read_env(
                env,
                "CONSUMER_RETRY_DELAYS_MS",
                int_list,
                d.consumer_retry_delays_ms,
                delays_ms,
            ),
            consumer_prefetch=read_env(
                env, "CONSUMER_PREFETCH", int, d.consumer_prefetch, between(1, 65_535)
            ),
            consumer_queue_prefix=read_env(
                env, "CONSUMER_QUEUE_PREFIX", str, d.consumer_queue_prefix, always_valid
            ),
        )
        if settings.api_workers > 1 and settings.http_port == 0:
            # Port 0 would give every worker a port of its own, none of them known.
            raise SettingsError("API_WORKERS > 1 needs a fixed HTTP_PORT, not 0")
        return settings


def read_env(
    env: Mapping[str, str],
    name: str,
    parse: Callable[[str], T],
    default: T,
    check: Callable[[T], str | None],
) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        kind = {
            "parse_bool": "boolean (true/false)",
            "float": "number",
            "int_list": "comma-separated list of integers",
        }.get(parse.__name__, parse.__name__)
        raise SettingsError(f"{name}={raw!r} is not a valid {kind}") from None
    problem = check(value)
    if problem:
        raise SettingsError(f"{name}={raw!r}: {problem}")
    return value


def parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def int_list(raw: str) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.split(","))


def always_valid(value: object) -> str | None:
    return None


def non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def url_with_scheme(scheme: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value.startswith(scheme) else f"must be a {scheme}... URL"

    return check


def between(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def seconds(low: float, high: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"must be between {low:g} and {high:g} seconds"

    return check


def delays_ms(value: tuple[int, ...]) -> str | None:
    if not value or any(not 1 <= delay <= 86_400_000 for delay in value):
        return "must be one or more delays between 1 and 86400000 ms"
    return None


def log_level_name(value: str) -> str | None:
    levels = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    return None if value in levels else f"must be one of {sorted(levels)}"
