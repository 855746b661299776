"""A dependency missing at start is named in one line, with its address and what to do: every
command and process, run as a new user would (`make run` with PostgreSQL down, a database that
does not exist, RabbitMQ down). No traceback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy.engine import make_url

from service.settings import Settings
from tests.support.processes import Child, environment, start
from tests.support.waiting import until


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def finished(child: Child, within: float = 30.0) -> tuple[int, list[str]]:
    async with asyncio.timeout(within):
        code = await child.process.wait()
    return code, [line for line in child.output().splitlines() if line.strip()]


def refused(port: int) -> str:
    return (
        f"error: PostgreSQL at 127.0.0.1:{port} is not reachable (connection refused): start it"
        " there, or set DATABASE_URL to where it runs"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["service", "migrate"],
        ["service", "outbox-status"],
        ["consumers", "reconcile"],
    ],
)
async def test_postgresql_down_is_one_line_naming_it(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    port = closed_port()
    env = environment(settings, DATABASE_URL=f"postgresql+asyncpg://app:pw@127.0.0.1:{port}/x")
    code, lines = await finished(await start("cli", command, env, tmp_path))
    assert (code, lines) == (1, [refused(port)])


@pytest.mark.parametrize("command", [["service", "outbox-status"], ["consumers", "reconcile"]])
async def test_a_database_that_does_not_exist_is_one_line_saying_to_migrate(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    url = make_url(settings.database_url.get_secret_value()).set(database="tickets_nowhere")
    env = environment(settings, DATABASE_URL=url.render_as_string(hide_password=False))
    code, lines = await finished(await start("cli", command, env, tmp_path))
    where = f"{url.host}:{url.port}"
    assert (code, lines) == (
        1,
        [
            f"error: database 'tickets_nowhere' does not exist on PostgreSQL at {where}: run"
            " `python -m service migrate` (it creates it), or set DATABASE_URL"
        ],
    )


async def test_rabbitmq_down_is_one_line_naming_it(settings: Settings, tmp_path: Path) -> None:
    port = closed_port()
    env = environment(settings, AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/")
    child = await start("dlq", ["consumers", "dlq", "list", "show_sales"], env, tmp_path)
    code, lines = await finished(child)
    assert (code, lines) == (
        1,
        [
            f"error: RabbitMQ at 127.0.0.1:{port} is not reachable (connection refused): start"
            " it there, or set AMQP_URL to where it runs"
        ],
    )


@pytest.mark.parametrize(
    ("name", "command"),
    [("relay", ["service", "relay"]), ("consumers", ["consumers", "run", "show_sales"])],
)
async def test_a_process_waits_for_its_database_saying_so_once_without_a_traceback(
    settings: Settings, tmp_path: Path, name: str, command: list[str]
) -> None:
    port = closed_port()
    env = environment(
        settings,
        DATABASE_URL=f"postgresql+asyncpg://app:pw@127.0.0.1:{port}/tickets",
        RELAY_MAX_BACKOFF="0.2",
        CONSUMER_MAX_BACKOFF="0.2",
        LOG_FORMAT="text",
        LOG_LEVEL="DEBUG",
    )
    child = await start(name, command, env, tmp_path)
    said = f"PostgreSQL at 127.0.0.1:{port} is not reachable (connection refused)"

    async def told() -> bool:
        return said in child.output()

    await until(told, within=20)

    async def tried_again() -> bool:  # its debug lines: several more tries, 0.2 s apart
        return child.output().count("retrying in") >= 3

    await until(tried_again, within=20)
    assert await child.stop() == 0
    output = child.output()
    told_lines = [line for line in output.splitlines() if said in line and " DEBUG " not in line]
    assert len(told_lines) == 1, output  # the retries are debug lines, not told again
    assert "Traceback" not in output and "pw" not in output


async def test_the_api_starts_without_its_database_and_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    port = closed_port()
    env = environment(
        settings,
        DATABASE_URL=f"postgresql+asyncpg://app:pw@127.0.0.1:{port}/tickets",
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(closed_port()),
        LOG_FORMAT="text",
        LOG_LEVEL="DEBUG",
    )
    child = await start("api", ["service", "api"], env, tmp_path)

    async def listening() -> bool:
        return "api listening" in child.output()

    await until(listening, within=20)
    assert await child.stop() == 0
    output = child.output()
    assert f"{refused(port).removeprefix('error: ')}; the API answers 503" in output
    assert "Traceback" not in output


async def test_a_classic_queue_of_an_older_version_stops_the_consumers_with_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    own = settings.replaced(events_exchange=f"{settings.events_exchange}.older")
    old_queue = f"{own.events_exchange}.show_sales"
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(old_queue, durable=True)  # classic, as before quorum queues
        try:
            env = environment(own, LOG_FORMAT="text")
            child = await start("consumers", ["consumers", "run", "show_sales"], env, tmp_path)
            code, lines = await finished(child)
        finally:
            await channel.queue_delete(old_queue)
            await channel.queue_delete(f"{old_queue}.dlq")  # declared before the refusal
            await channel.exchange_delete(own.events_exchange)
            await channel.queue_delete(f"{own.events_exchange}.unrouted")
            await channel.exchange_delete(f"{own.events_exchange}.unrouted")
    assert code == 1
    assert lines[-1].startswith(f"error: RabbitMQ refused to declare queue '{old_queue}'")
    assert "Moving an existing deployment to quorum queues" in lines[-1]
    assert "Traceback" not in child.output()
