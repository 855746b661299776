"""A dead network path (the proxy forwards nothing and closes nothing) between PostgreSQL and
one of two API processes and the leading one of two relays, during steady bookings on 20 shows.

    API a ──proxy──┐                  relay 1 (leads) ──proxy──┐
    API b ─────────┴── PostgreSQL     relay 2 (standby) ───────┴── PostgreSQL

The path dies right before one of API a's COMMITs, its transaction left open on the server
with its show's row locked. While the path is dead:
- every request to API a is answered within BOOKING_MAX_WAIT + 5 s (and a little), with 503;
  its /ready says 503 within 5 s;
- API b keeps answering 201: no row lock of API a's vanished sessions is held hostage (they
  are freed 2 s after their last statement, idle_in_transaction_session_timeout);
- relay 1 loses the lead (PostgreSQL ends its silent session after 10 s, idle_session_timeout)
  and relay 2 takes it within 15 s and publishes API b's events; relay 1 finds out (its next
  statement times out) and steps down before relay 2 leads: never two leaders at once.
Once the path is back: API a answers 201 again, relay 1 rejoins as a standby, every event
arrives, and the tables agree.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.settings import Settings
from tests.support.api import show_body
from tests.support.broker import bound_queue
from tests.support.consumers import own_database
from tests.support.database import asyncpg_dsn
from tests.support.invariants import database_problems
from tests.support.load import SteadyLoad, poster
from tests.support.metrics import sample
from tests.support.processes import Child, environment, start, wait_until_ready
from tests.support.proxy import Mode, PostgresProxy, pg_proxy_to
from tests.support.waiting import until

MAX_WAIT = 5.0  # BOOKING_MAX_WAIT, the default
ANSWER_BOUND = MAX_WAIT + 5.0 + 1.5  # the promise, and a little for a busy test machine
DEAD_FOR = 22.0  # seconds the path stays dead: the lead moves within 15 s
LEAD_MOVES_WITHIN = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Leadership:
    """When each relay led, from its tickets_relay_leader, polled every 0.1 s."""

    ports: dict[str, int]
    changes: list[tuple[float, str, bool]] = field(default_factory=list)
    now: dict[str, bool] = field(default_factory=dict)

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http:
            while True:
                for name, port in self.ports.items():
                    leading = await _leading(http, port)
                    if leading is not None and leading != self.now.get(name):
                        self.now[name] = leading
                        self.changes.append((loop.time(), name, leading))
                await asyncio.sleep(0.1)

    def first(self, name: str, leading: bool, after: float) -> float | None:
        return next(
            (t for t, n, lead in self.changes if n == name and lead == leading and t >= after),
            None,
        )

    def both_led_at_once(self) -> bool:
        current: dict[str, bool] = {}
        for _, name, leading in self.changes:
            current[name] = leading
            if sum(current.values()) > 1:
                return True
        return False


async def _leading(http: aiohttp.ClientSession, port: int) -> bool | None:
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            return sample(await response.text(), "tickets_relay_leader") == 1
    except aiohttp.ClientError:
        return None


@asynccontextmanager
async def processes(children: list[Child]) -> AsyncIterator[list[Child]]:
    try:
        yield children
    finally:
        for child in children:
            if child.process.returncode is None:
                await child.stop()


async def ready_within(http: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    asked = loop.time()
    async with http.get(url) as response:
        return response.status, loop.time() - asked


@pytest.mark.slow
async def test_a_dead_path_under_one_api_and_the_leading_relay(
    settings: Settings, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("a", "b", "relay1", "relay2")}
    async with own_database() as url:
        database = make_url(url)
        async with pg_proxy_to(database.host or "127.0.0.1", database.port or 5432) as proxy:
            dead_url = database.set(port=proxy.port).render_as_string(hide_password=False)
            own = settings.replaced(database_url=url)
            await run_the_outage(own, dead_url, proxy, ports, tmp_path)


async def run_the_outage(
    own: Settings, dead_url: str, proxy: PostgresProxy, ports: dict[str, int], tmp_path: Path
) -> None:
    url = own.database_url.get_secret_value()
    base = {name: f"http://127.0.0.1:{ports[name]}" for name in ("a", "b")}

    def env(name: str, database_url: str) -> dict[str, str]:
        port_variable = "RELAY_HTTP_PORT" if name.startswith("relay") else "HTTP_PORT"
        return environment(
            own,
            DATABASE_URL=database_url,
            HTTP_HOST="127.0.0.1",
            **{port_variable: str(ports[name])},
            RELAY_POLL_INTERVAL="0.1",
            RELAY_MAX_BACKOFF="1",
        )

    loop = asyncio.get_running_loop()
    connection = await aio_pika.connect(own.amqp_url.get_secret_value())
    async with connection, bound_queue(await connection.channel(), own.events_exchange) as got:
        # Relay 1 first, so that it leads; relay 2 then stands by.
        relay1 = await start("relay1", ["service", "relay"], env("relay1", dead_url), tmp_path)
        async with processes([relay1]):
            leadership = Leadership({"relay1": ports["relay1"], "relay2": ports["relay2"]})
            watching = asyncio.create_task(leadership.watch())
            await until(lambda: _is(leadership, "relay1", True), within=20)
            relay2 = await start("relay2", ["service", "relay"], env("relay2", url), tmp_path)
            api_a = await start("api-a", ["service", "api"], env("a", dead_url), tmp_path)
            api_b = await start("api-b", ["service", "api"], env("b", url), tmp_path)
            async with processes([relay2, api_a, api_b]), aiohttp.ClientSession() as http:
                for name, child in (("a", api_a), ("b", api_b)):
                    await wait_until_ready(f"{base[name]}/ready", child)
                await until(lambda: _is(leadership, "relay2", False), within=20)
                shows = [await _new_show(http, base["b"]) for _ in range(20)]
                apis = {name: poster(http, base[name]) for name in base}
                async with SteadyLoad(apis, shows, clients=5) as load:
                    await until(lambda: _answered(load, 200), within=20)
                    # The path dies between a booking's last statement and its COMMIT: API a's
                    # transaction stays open on the server, holding its show's row.
                    proxy.blackhole_at_commit(application_name="tickets")
                    await until(lambda: _dead(proxy), within=10, every=0.01)
                    assert proxy.blackholed_at is not None
                    died = proxy.blackholed_at
                    status, took = await ready_within(http, f"{base['a']}/ready")
                    assert (status, took < 3.0) == (503, True), took
                    await asyncio.sleep(DEAD_FOR - (loop.time() - died))
                    healed = loop.time()
                    proxy.heal()
                    await until(lambda: _a_books_again(load, healed), within=30)
                    back = min(a.asked_at + a.took for a in load.of("a", since=healed)
                               if a.status == 201)  # fmt: skip
                # Relay 1 rejoins, as a standby: connected, not leading.
                await until(lambda: _ready(http, ports["relay1"]), within=20)
                rejoined = loop.time()
                assert leadership.now == {"relay1": False, "relay2": True}
                await got.wait_for_all(await _event_ids(url), within=60)
                watching.cancel()  # before relay 2 stops: relay 1 would lead then, rightly

    during = load.of("a", since=died, until=healed - ANSWER_BOUND)
    assert during and {a.status for a in during} == {503}, load.statuses(during)
    slowest = max(a.took for a in during)
    assert slowest <= ANSWER_BOUND
    healthy = load.of("b", since=died, until=healed)
    assert healthy and load.statuses(healthy) == {201: len(healthy)}

    new_leader = leadership.first("relay2", True, after=died)
    old_stepped_down = leadership.first("relay1", False, after=died)
    assert new_leader is not None and new_leader - died <= LEAD_MOVES_WITHIN
    assert old_stepped_down is not None and old_stepped_down - died <= LEAD_MOVES_WITHIN
    assert old_stepped_down < new_leader and not leadership.both_led_at_once()
    # Relay 2 published API b's bookings while the path was still dead.
    booked_b = {
        a.body["booking_id"] for a in healthy if a.asked_at < healed - 3 and a.status == 201
    }
    assert booked_b and booked_b <= got.booking_ids(before=healed)
    assert load.booked() <= got.booking_ids()

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await database_problems(conn) == {}
        assert {
            str(b) for b in await conn.fetchval("SELECT array_agg(booking_id) FROM bookings")
        } == load.booked()
    finally:
        await conn.close()
    print(
        f"\ndead path for {healed - died:.1f} s: API a {dict(load.statuses(during))}, slowest"
        f" {slowest:.2f} s; API b {dict(load.statuses(healthy))}, slowest"
        f" {max(a.took for a in healthy):.2f} s; relay 1 stepped down after"
        f" {old_stepped_down - died:.2f} s, relay 2 led after {new_leader - died:.2f} s; API a"
        f" booked again {back - healed:.2f} s and relay 1 stood by again"
        f" {rejoined - healed:.2f} s after the path came back"
    )


async def _is(leadership: Leadership, name: str, leading: bool) -> bool:
    return leadership.now.get(name) is leading


async def _dead(proxy: PostgresProxy) -> bool:
    return proxy.mode is Mode.BLACKHOLE


async def _ready(http: aiohttp.ClientSession, port: int) -> bool:
    status, _ = await ready_within(http, f"http://127.0.0.1:{port}/ready")
    return status == 200


async def _answered(load: SteadyLoad, count: int) -> bool:
    return len(load.answers) >= count


async def _a_books_again(load: SteadyLoad, since: float) -> bool:
    return any(a.status == 201 for a in load.of("a", since=since))


async def _new_show(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/shows", json=show_body(1_000_000)) as response:
        assert response.status == 201
        return str((await response.json())["show_id"])


async def _event_ids(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM outbox")}
    finally:
        await conn.close()
