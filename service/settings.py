"""Settings, read once from the environment into a frozen object.

Each setting is declared once, below: its variable (the field's name in capitals), default,
check and a one-line doc together. The README's configuration table is generated from these
declarations (`python -m service settings`) and a test keeps the two equal.

A bad value fails at start with a message naming the variable, instead of surfacing later as an
obscure connection error in the middle of a sale. URLs are secrets: a bad one is told with its
password masked, and it never appears in a repr or a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(ValueError):
    """A variable in the environment has a value the service cannot use."""


def setting(default: Any, doc: str, **checks: Any) -> Any:
    return Field(default, description=doc, **checks)


def _scheme(scheme: str) -> AfterValidator:
    def check(value: SecretStr | str) -> SecretStr | str:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw and not raw.startswith(scheme):
            raise ValueError(f"must be a {scheme}... URL")
        return value

    return AfterValidator(check)


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        try:
            return tuple(int(part) for part in value.split(","))
        except ValueError:
            raise ValueError("must be a comma-separated list of integers") from None
    return value


def _delays(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or any(not 1 <= delay <= 86_400_000 for delay in value):
        raise ValueError("must be one or more delays between 1 and 86400000 ms")
    return value


def _case(fold: Callable[[str], str]) -> BeforeValidator:
    return BeforeValidator(lambda value: fold(value.strip()) if isinstance(value, str) else value)


# A bearer token travels in a header: visible ASCII, and long enough not to be guessed.
_TOKEN = re.compile(r"[\x21-\x7e]{16,512}")


def _token(value: SecretStr) -> SecretStr:
    token = value.get_secret_value()
    if token and not _TOKEN.fullmatch(token):
        raise ValueError("must be 16 to 512 visible ASCII characters (no spaces)")
    return value


Seconds = Annotated[float, Field(allow_inf_nan=False)]
Token = Annotated[SecretStr, AfterValidator(_token)]
Port = Annotated[int, Field(ge=0, le=65535)]
PostgresUrl = Annotated[SecretStr, _scheme("postgresql")]
AmqpUrl = Annotated[SecretStr, _scheme("amqp")]
HttpUrl = Annotated[str, _scheme("http")]  # or empty
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], _case(str.upper)]
LogFormat = Annotated[Literal["auto", "json", "text"], _case(str.lower)]
DelaysMs = Annotated[
    tuple[int, ...], NoDecode, BeforeValidator(_comma_separated), AfterValidator(_delays)
]
_CONFIG = SettingsConfigDict(frozen=True, env_ignore_empty=True, extra="ignore")


class _Common(BaseSettings):
    """Where things are, and how every process logs and traces."""

    model_config = _CONFIG

    database_url: PostgresUrl = setting(
        SecretStr("postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/tickets"), "PostgreSQL"
    )
    amqp_url: AmqpUrl = setting(SecretStr("amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ")
    events_exchange: str = setting("events", "topic exchange for events", min_length=1)
    http_host: str = setting("0.0.0.0", "where the API listens", min_length=1)
    http_port: Port = setting(8080, "the API's port (0: any free port)")
    log_level: LogLevel = setting("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_format: LogFormat = setting(
        "auto", "`json` lines or `text`; `auto`: text on a terminal, JSON otherwise"
    )
    otel_exporter_otlp_endpoint: HttpUrl = setting(
        "", "OTLP/HTTP collector (e.g. `http://collector:4318`); unset: traces stay in-process"
    )


class _Api(BaseSettings):
    """The API and its booking transactions."""

    model_config = _CONFIG

    api_workers: int = setting(1, "API processes sharing the port (SO_REUSEPORT)", ge=1, le=64)
    db_pool_size: int = setting(
        10, "pooled connections per API process (and as many overflow)", ge=1, le=500
    )
    booking_coalescing: bool = setting(
        True, "book concurrent requests for one show in one transaction (`false`: one each)"
    )
    booking_batch_max: int = setting(
        200, "most requests one booking transaction takes", ge=1, le=10_000
    )
    booking_lanes: int = setting(
        1, "booking transactions one API process runs side by side", ge=1, le=64
    )
    booking_max_wait: Seconds = setting(
        5.0,
        "seconds a request may wait for its turn, and a booking for a row lock",
        ge=0.01,
        le=300,
    )
    booking_max_attempts: int = setting(
        12, "tries of a transaction that lost a serialization race", ge=1, le=100
    )
    booking_max_queued: int = setting(
        1_000,
        "booking requests one API process lets wait for a transaction; past it, 503 at once",
        ge=1,
        le=1_000_000,
    )
    http_body_timeout: Seconds = setting(
        10.0, "seconds a request body may take to arrive; then 408", ge=0.1, le=300
    )
    http_idle_timeout: Seconds = setting(
        15.0,
        "seconds a connection may stay idle or take to send a request's head; then closed",
        ge=0.1,
        le=3_600,
    )
    shows_api_token: Token = setting(
        SecretStr(""), "bearer token `POST /shows` requires; unset: no token needed"
    )
    idempotency_key_ttl: Seconds = setting(
        86_400.0,
        "seconds an `Idempotency-Key` and its answer are kept (then purged by the relay)",
        ge=1,
        le=3.2e8,
    )


class _Relay(BaseSettings):
    """The outbox relay."""

    model_config = _CONFIG

    relay_http_port: Port = setting(8081, "the relay's /metrics, /health, /ready (0: off)")
    relay_batch_size: int = setting(
        500, "outbox rows the relay reads and publishes per batch", ge=1, le=10_000
    )
    relay_poll_interval: Seconds = setting(
        0.5, "seconds between outbox polls when no NOTIFY arrives (at most 1)", ge=0.01, le=1.0
    )
    # At most 8 s: the leader says nothing to PostgreSQL while it waits for confirms, and a
    # leader silent for 10 s is taken for dead (service/db/bounds.py, RELAY).
    relay_publish_timeout: Seconds = setting(
        5.0,
        "seconds a batch's publishes may wait for RabbitMQ's confirms (at most 8)",
        ge=0.1,
        le=8,
    )
    relay_max_backoff: Seconds = setting(
        10.0, "cap, in seconds, of the relay's reconnect backoff", ge=0.1, le=600
    )
    outbox_retention: Seconds = setting(
        86_400.0, "seconds a published outbox row is kept before it is purged", ge=0, le=3.2e8
    )
    outbox_purge_interval: Seconds = setting(
        60.0,
        "seconds between purge rounds (published outbox rows, expired idempotency keys)",
        ge=0.1,
        le=86_400,
    )


class _Consumers(BaseSettings):
    """The consumers."""

    model_config = _CONFIG

    consumers_http_port: Port = setting(8082, "the consumers' /metrics, /health, /ready (0: off)")
    ticket_provider_url: HttpUrl = setting(
        "", "base URL of the ticket provider; unset: `ticket_provider` is skipped"
    )
    ticket_provider_timeout: Seconds = setting(
        5.0, "seconds per call to the provider", ge=0.1, le=300
    )
    consumer_max_attempts: int = setting(
        5, "attempts before a message goes to the consumer's dead-letter queue", ge=1, le=100
    )
    consumer_retry_delays_ms: DelaysMs = setting(
        (1_000, 5_000, 30_000, 120_000), "growing delays between attempts (the last repeats)"
    )
    consumer_prefetch: int = setting(
        128,
        "unacknowledged messages a consumer holds at once (at least CONSUMER_BATCH_MAX)",
        ge=1,
        le=65_535,
    )
    consumer_batch_max: int = setting(
        100,
        "most messages show_sales applies in one transaction (it takes what has arrived)",
        ge=1,
        le=10_000,
    )
    consumer_max_backoff: Seconds = setting(
        10.0, "cap, in seconds, of a consumer's reconnect backoff", ge=0.1, le=600
    )
    consumer_delivery_limit: int = setting(
        5,
        "deliveries of one message that end without an ack (its consumer crashed) before it"
        " is dead-lettered",
        ge=1,
        le=1_000,
    )


class Settings(_Consumers, _Relay, _Api, _Common):
    """Every setting of every process (each reads what it needs)."""

    model_config = _CONFIG

    @model_validator(mode="after")
    def _workers_need_a_port(self) -> Settings:
        if self.api_workers > 1 and self.http_port == 0:
            # Port 0 would give every worker a port of its own, none of them known.
            raise ValueError("API_WORKERS > 1 needs a fixed HTTP_PORT, not 0")
        return self

    @model_validator(mode="after")
    def _prefetch_holds_a_batch(self) -> Settings:
        if self.consumer_prefetch < self.consumer_batch_max:
            # A batch is made of the messages held at once: fewer could never fill one.
            raise ValueError("CONSUMER_PREFETCH must be at least CONSUMER_BATCH_MAX")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of `env` (the process environment by default); SettingsError if a
        value is unusable. Unset and empty variables take the default."""
        source = os.environ if env is None else env
        removed = [f"{name}: {why}" for name, why in REMOVED.items() if source.get(name)]
        if removed:
            raise SettingsError("; ".join(removed))
        given = {name: raw for name in cls.model_fields if (raw := source.get(name.upper()))}
        try:
            return cls.model_validate(given)
        except ValidationError as error:
            raise SettingsError(_explain(error, given)) from None

    def replaced(self, **changes: object) -> Settings:
        """A copy with some settings changed, checked like the environment's."""
        return type(self).model_validate(self.model_dump() | changes)


# Variables no longer read, and what to do instead: set, they stop the process rather than
# be ignored, since what they used to change would silently change back.
REMOVED = {
    "CONSUMER_QUEUE_PREFIX": "no longer read: consumer queues are named"
    " <EVENTS_EXCHANGE>.<consumer> (a deployment's exchange names its queues too); unset it"
    " (README, 'Moving an existing deployment to quorum queues')",
}
SECRETS = frozenset({"database_url", "amqp_url"})  # URLs carry passwords: told masked
TOKENS = frozenset({"shows_api_token"})  # never told at all


def mask_password(url: str) -> str:
    """The URL with its password replaced: safe for an error message or a log line."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _explain(error: ValidationError, given: Mapping[str, str]) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        if not item["loc"]:  # a rule across settings: its message names the variables
            problems.append(item["msg"].removeprefix("Value error, "))
            continue
        name = str(item["loc"][0])
        raw = given.get(name, "")
        shown = repr(mask_password(raw) if name in SECRETS else raw)
        if name in TOKENS:
            shown = "<hidden>"
        problems.append(f"{name.upper()}={shown}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def settings_table() -> str:
    """The README's configuration table, from the declarations above."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if isinstance(default, tuple):
            default = ",".join(str(part) for part in default)
        if isinstance(default, bool):
            default = str(default).lower()
        if isinstance(default, float):
            default = f"{default:g}"
        shown = f"`{default}`" if default != "" else "*(unset)*"
        rows.append(f"| `{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)
