import pytest

from service.settings import Settings, SettingsError


def test_defaults_work_with_local_services() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.get_secret_value().startswith("postgresql+asyncpg://")
    assert settings.events_exchange == "events"
    assert settings.http_port == 8080


def test_reads_values() -> None:
    settings = Settings.from_env({"HTTP_PORT": "9000", "EVENTS_EXCHANGE": "ev", "API_WORKERS": "2"})
    assert (settings.http_port, settings.events_exchange, settings.api_workers) == (9000, "ev", 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_PORT", "eighty"),
        ("HTTP_PORT", "70000"),
        ("DATABASE_URL", "mysql://x"),
        ("AMQP_URL", "http://x"),
        ("API_WORKERS", "0"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("raw", "value"), [("false", False), ("0", False), ("TRUE", True)])
def test_booleans(raw: str, value: bool) -> None:
    assert Settings.from_env({"BOOKING_COALESCING": raw}).booking_coalescing is value


def test_bad_boolean_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"BOOKING_COALESCING.*boolean"):
        Settings.from_env({"BOOKING_COALESCING": "maybe"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAY_POLL_INTERVAL", "2"),
        ("RELAY_POLL_INTERVAL", "soon"),
        ("RELAY_BATCH_SIZE", "0"),
        ("OUTBOX_RETENTION", "-1"),
        ("TICKET_PROVIDER_URL", "ftp://x"),
        ("CONSUMER_RETRY_DELAYS_MS", "1000,x"),
        ("CONSUMER_RETRY_DELAYS_MS", "0"),
        ("CONSUMER_PREFETCH", "0"),
    ],
)
def test_bad_relay_or_consumer_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_reads_relay_and_consumer_values() -> None:
    settings = Settings.from_env(
        {
            "RELAY_POLL_INTERVAL": "0.2",
            "CONSUMER_RETRY_DELAYS_MS": "10, 20,30",
            "TICKET_PROVIDER_URL": "http://127.0.0.1:9999",
        }
    )
    assert settings.relay_poll_interval == 0.2
    assert settings.consumer_retry_delays_ms == (10, 20, 30)
    assert settings.ticket_provider_url == "http://127.0.0.1:9999"


def test_reads_coalescing_bounds() -> None:
    settings = Settings.from_env(
        {"BOOKING_LANES": "4", "BOOKING_MAX_WAIT": "0.5", "BOOKING_BATCH_MAX": "50"}
    )
    assert (settings.booking_lanes, settings.booking_max_wait) == (4, 0.5)
    assert settings.booking_batch_max == 50


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOOKING_LANES", "0"),
        ("BOOKING_MAX_WAIT", "0"),
        ("BOOKING_MAX_WAIT", "forever"),
        ("BOOKING_BATCH_MAX", "0"),
    ],
)
def test_bad_coalescing_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_several_workers_need_a_fixed_port() -> None:
    with pytest.raises(SettingsError, match="API_WORKERS"):
        Settings.from_env({"API_WORKERS": "2", "HTTP_PORT": "0"})


def test_a_consumer_prefetch_holds_a_whole_batch() -> None:
    settings = Settings.from_env({"CONSUMER_BATCH_MAX": "50", "CONSUMER_PREFETCH": "50"})
    assert (settings.consumer_batch_max, settings.consumer_prefetch) == (50, 50)
    assert Settings.from_env({}).consumer_prefetch >= Settings.from_env({}).consumer_batch_max
    with pytest.raises(SettingsError, match="CONSUMER_PREFETCH must be at least CONSUMER_BATCH"):
        Settings.from_env({"CONSUMER_BATCH_MAX": "51", "CONSUMER_PREFETCH": "50"})


def test_the_issue_11_bounds_and_their_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.http_body_timeout, settings.http_idle_timeout) == (10.0, 15.0)
    assert settings.booking_max_queued == 1000
    assert settings.shows_api_token.get_secret_value() == ""  # no token: POST /shows is open
    given = Settings.from_env({"BOOKING_MAX_QUEUED": "50", "HTTP_BODY_TIMEOUT": "2.5"})
    assert (given.booking_max_queued, given.http_body_timeout) == (50, 2.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOOKING_MAX_QUEUED", "0"),
        ("HTTP_BODY_TIMEOUT", "0"),
        ("HTTP_BODY_TIMEOUT", "inf"),
        ("HTTP_IDLE_TIMEOUT", "-1"),
    ],
)
def test_bad_bound_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "token", ["short", "has a space in it, sixteen+", "t\u00f6ken-0123456789abcdef"]
)
def test_a_bad_token_is_refused_without_being_shown(token: str) -> None:
    with pytest.raises(SettingsError, match="SHOWS_API_TOKEN=<hidden>") as refused:
        Settings.from_env({"SHOWS_API_TOKEN": token})
    assert token not in str(refused.value)


def test_a_token_is_kept_secret() -> None:
    settings = Settings.from_env({"SHOWS_API_TOKEN": "0123456789abcdef-secret"})
    assert settings.shows_api_token.get_secret_value() == "0123456789abcdef-secret"
    assert "0123456789abcdef-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "url", "shown"),
    [
        ("DATABASE_URL", "mysql://app:hunter2@db/tickets", "mysql://app:***@db/tickets"),
        ("AMQP_URL", "http://u:hunter2@mq:5672/", "http://u:***@mq:5672/"),
    ],
)
def test_a_bad_url_is_told_with_its_password_masked(name: str, url: str, shown: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: url})
    assert f"{name}={shown!r}" in str(refused.value)
    assert "hunter2" not in str(refused.value)
