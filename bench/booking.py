"""Booking throughput: the service over HTTP against pgbench baselines run in the same run.

    python -m bench.booking [--duration SECONDS] [--quick]      (make bench runs it)

1. Baselines, with the pgbench scripts in <repo>/../shared/bench (see its README), 20 clients, in
   a database of their own, schema.sql re-run before each: one booking per transaction on one
   hot show; the same spread over 1,000 shows; the textbook way (SERIALIZABLE, capacity from
   SUM over bookings, retried).
2. The service: the real app (create_app) in a child process, one process, in a migrated
   database of its own; load from this process, an aiohttp client with one connection per
   concurrent client: 20 and 100 clients on one hot show, then over 1,000 shows; then the hot
   show again with an Idempotency-Key (a fresh one) on every request; and, for contrast, 20
   clients on a hot show with coalescing off (one transaction per request).
3. After every run the tables are checked: no overbooking; per show, the counter, the bookings
   and the outbox rows agree; one outbox row per booking; as many bookings as 201 answers; as
   many stored idempotency keys as keyed requests answered 201 or 400.
   A broken invariant (or any 5xx but 503 busy) stops the bench with exit status 1.
4. One table, with ratios against the matching baseline, and the issue's targets.

Transaction retries live in the API process's BookingStats. The API child reports them over a
pipe when it shuts down (an on_cleanup hook added here), so the HTTP contract gains no
stats endpoint; a fresh API process per run makes them per-run figures.

The load generator is Python: on the 2-core machines measured, wrk (C) gave the service about
the same rates, and a Python client needs nothing installed. It shares the cores with the API
and PostgreSQL, as pgbench's client does with PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from service.api import create_app
from service.common.logs import configure_logging
from service.db.engine import create_engine, migrate
from service.db.shows import NewShow, create_show
from service.settings import Settings
from tests.support.bookings import BookingStats
from tests.support.database import asyncpg_dsn, drop_database, new_database_url
from tests.support.invariants import database_problems

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT.parent / "shared" / "bench"
RESULTS = ROOT / "bench" / "results"
ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
BASELINE_CLIENTS = 20
SPREAD_SHOWS = 1_000
# Enough tickets that no run sells a show out: a refusal skips the writes, so a sold-out show
# would flatter the rate. Refusals are still counted and shown.
TICKETS_PER_SHOW = 100_000_000
HOT_BASELINE = "pgbench one per tx, hot show"
SPREAD_BASELINE = "pgbench one per tx, 1,000 shows"
TEXTBOOK = "pgbench textbook (SERIALIZABLE + SUM)"
HOT, SPREAD, UNCOALESCED = "hot show", "1,000 shows", "hot show, one tx per request"
KEYED = "hot show, Idempotency-Key"
# (clients, shape) of the service's runs. The last is BOOKING_COALESCING=false, for contrast:
# the contention that coalescing removes.
RUNS = [
    (20, HOT),
    (100, HOT),
    (20, SPREAD),
    (100, SPREAD),
    (20, KEYED),
    (100, KEYED),
    (20, UNCOALESCED),
]


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    clients: int
    rate: float
    p50_ms: float
    p99_ms: float
    accepted: int
    rejected: int
    busy: int = 0  # 503: contention retries ran out (allowed by the contract, but shown)
    retries_per_booking: float | None = None
    bookings_per_tx: float | None = None
    rss_mb: float | None = None
    baseline: str = ""  # the name of the row this one is divided by


@dataclasses.dataclass
class Options:
    duration: float
    warmup: float
    scripts: Path


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    check_tools(options.scripts)
    started = time.monotonic()
    machine = describe_machine()
    baselines = run_baselines(options)
    try:
        service_rows = asyncio.run(run_service(options))
    except BrokenInvariant as broken:
        print(f"\nBENCH FAILED: {broken}", file=sys.stderr)
        return 1
    report = render(machine, [*baselines, *service_rows], time.monotonic() - started)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "booking.md").write_text(report)
    return 0


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.booking", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke test")
    parser.add_argument("--scripts", type=Path, default=SCRIPTS, help="pgbench scripts")
    args = parser.parse_args(argv)
    if args.quick:
        return Options(duration=3.0, warmup=0.5, scripts=args.scripts)
    return Options(duration=args.duration, warmup=args.warmup, scripts=args.scripts)


def check_tools(scripts: Path) -> None:
    missing = [tool for tool in ("pgbench", "psql", "createdb", "dropdb") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"bench needs {', '.join(missing)} on PATH (PostgreSQL client tools)")
    if not (scripts / "schema.sql").exists():
        raise SystemExit(f"pgbench scripts not found in {scripts} (expected ../shared/bench)")


# ---------------------------------------------------------------- pgbench baselines


def run_baselines(options: Options) -> list[Row]:
    name = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    env = pg_environment()
    subprocess.run(["createdb", name], env=env, check=True)
    try:
        return [
            pgbench(options, env, name, "one_per_tx_hot.sql", HOT_BASELINE),
            pgbench(options, env, name, "one_per_tx_spread.sql", SPREAD_BASELINE),
            pgbench(options, env, name, "textbook_serializable.sql", TEXTBOOK, "--max-tries=1000"),
        ]
    finally:
        subprocess.run(["dropdb", "--force", name], env=env, check=True)


def pgbench(
    options: Options, env: dict[str, str], db: str, script: str, title: str, *extra: str
) -> Row:
    # Fresh tables each time: the textbook way slows down as bookings pile up.
    psql = [
        "psql",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        db,
        "-f",
        str(options.scripts / "schema.sql"),
    ]
    subprocess.run(psql, env=env, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as logs:
        clients = ["-c", str(BASELINE_CLIENTS), "-j", "2"]
        log = ["-l", f"--log-prefix={logs}/tx"]
        run = ["-T", str(round(options.duration)), *extra, "-f", str(options.scripts / script)]
        command = ["pgbench", "-n", *clients, *log, *run, db]
        print(f"  {title} ...", file=sys.stderr, flush=True)
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        latencies = pgbench_latencies(Path(logs))
    summary = pgbench_summary(out)
    done = summary["number of transactions actually processed"]
    retries = summary.get("total number of retries")
    return Row(
        name=title,
        clients=BASELINE_CLIENTS,
        rate=summary["tps"],
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        accepted=int(done),
        rejected=int(summary.get("number of failed transactions", 0)),
        retries_per_booking=None if retries is None else retries / max(done, 1),
    )


def pgbench_summary(output: str) -> dict[str, float]:
    """The numbers of pgbench's summary: `name: 123 (...)` and `tps = 123.4 (...)` lines."""
    summary: dict[str, float] = {}
    for line in output.splitlines():
        key, sep, rest = line.partition(":") if "tps =" not in line else line.partition("=")
        value = rest.split()[0] if sep and rest.split() else ""
        try:
            summary[key.strip()] = float(value)
        except ValueError:
            continue
    return summary


def pgbench_latencies(logs: Path) -> list[float]:
    """Per-transaction latencies (seconds) from pgbench's -l logs: the third field, in µs."""
    latencies = []
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            field = line.split()[2]
            if field.isdigit():  # failed transactions say "failed" or "serialization"
                latencies.append(int(field) / 1e6)
    return latencies


def pg_environment() -> dict[str, str]:
    url = make_url(ADMIN_URL)
    env = dict(os.environ, PGHOST=url.host or "127.0.0.1", PGPORT=str(url.port or 5432))
    env["PGUSER"] = url.username or "postgres"
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


# ---------------------------------------------------------------- the service over HTTP


class BrokenInvariant(Exception):
    pass


@dataclasses.dataclass
class Load:
    """What the load generator saw: latencies and statuses inside the measured window, and
    every 201 of the whole run (warm-up included) to hold against the bookings table."""

    latencies: list[float] = dataclasses.field(default_factory=list)
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    created: int = 0
    keys_stored: int = 0  # keyed requests answered 201 or 400: each stored its answer
    failures: int = 0


async def run_service(options: Options) -> list[Row]:
    url = new_database_url("bench_service")
    await asyncio.to_thread(migrate, url)
    try:
        spread = await create_shows(url, SPREAD_SHOWS)
        rows = []
        created = stored = 0
        for clients, shape in RUNS:
            shows = spread if shape == SPREAD else (await create_shows(url, 1))
            row, load = await run_one(options, url, shows, clients, shape)
            created += load.created
            stored += load.keys_stored
            await check_invariants(url, created, stored)
            rows.append(row)
        return rows
    finally:
        await drop_database(url)


async def run_one(
    options: Options, url: str, shows: list[uuid.UUID], clients: int, shape: str
) -> tuple[Row, Load]:
    title = f"service, {shape}"
    print(f"  {title}, {clients} clients ...", file=sys.stderr, flush=True)
    with api_process(url, coalescing=shape != UNCOALESCED) as api:
        await api.until_ready()
        load = await generate_load(api.base_url, shows, clients, options, keyed=shape == KEYED)
        rss_mb = api.peak_rss_mb()
    stats = api.stats
    broken = {s: n for s, n in load.statuses.items() if s not in (201, 400, 503)}
    if broken or load.failures:
        raise BrokenInvariant(f"{title}, c={clients}: answers {broken}, {load.failures} failures")
    bookings = stats["bookings"]
    row = Row(
        name=title,
        clients=clients,
        rate=len(load.latencies) / options.duration,
        p50_ms=percentile(load.latencies, 50) * 1000,
        p99_ms=percentile(load.latencies, 99) * 1000,
        accepted=load.statuses[201],
        rejected=load.statuses[400],
        busy=load.statuses[503],
        retries_per_booking=stats["retries"] / max(bookings, 1),
        bookings_per_tx=bookings / max(stats["transactions"], 1),
        rss_mb=rss_mb,
        baseline=SPREAD_BASELINE if shape == SPREAD else HOT_BASELINE,
    )
    return row, load


async def generate_load(
    base_url: str, shows: list[uuid.UUID], clients: int, options: Options, keyed: bool = False
) -> Load:
    """`clients` concurrent clients, each on its own connection, booking 1 ticket at a time on a
    show picked at random; closed loop, like pgbench's clients. `keyed`: every request carries
    an Idempotency-Key of its own (the cost of storing every answer, no replays)."""
    bodies = [
        json.dumps({"show_id": str(s), "number_of_tickets": 1, "customer_email": "fan@example.com"})
        for s in shows
    ]
    plain = {"Content-Type": "application/json"}
    load = Load()
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + options.warmup
    stop_at = measure_from + options.duration

    async def client(session: aiohttp.ClientSession) -> None:
        while (sent := loop.time()) < stop_at:
            headers = plain | {"Idempotency-Key": str(uuid.uuid4())} if keyed else plain
            try:
                async with session.post(
                    "/book-tickets", data=random.choice(bodies), headers=headers
                ) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                load.failures += 1
                continue
            done = loop.time()
            load.created += status == 201
            load.keys_stored += keyed and status in (201, 400)
            if measure_from <= done < stop_at:
                load.latencies.append(done - sent)
                load.statuses[status] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return load


class ApiProcess:
    """The API (create_app, one process) in a child process that reports its BookingStats
    over a pipe when it shuts down."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._stats_in, stats_out = context.Pipe(duplex=False)
        self._process = context.Process(target=serve_api, args=(settings, stats_out))
        self.base_url = f"http://{settings.http_host}:{settings.http_port}"
        self.stats: dict[str, int] = {}

    def start(self) -> None:
        self._process.start()

    async def until_ready(self, within: float = 30.0) -> None:
        async with asyncio.timeout(within), aiohttp.ClientSession(self.base_url) as session:
            while True:
                if not self._process.is_alive():
                    raise RuntimeError("the API process exited before it was ready")
                try:
                    async with session.get("/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self._process.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(kib) / 1024

    def stop(self) -> None:
        self._process.terminate()  # SIGTERM: aiohttp shuts down, cleanup sends the stats
        if self._stats_in.poll(30):
            self.stats = self._stats_in.recv()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
        if not self.stats:
            raise RuntimeError("the API process did not report its booking stats")


@contextmanager
def api_process(database_url: str, coalescing: bool) -> Iterator[ApiProcess]:
    settings = Settings.from_env({}).replaced(
        booking_coalescing=coalescing,
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=free_port(),
        log_level="WARNING",
    )
    api = ApiProcess(settings)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def serve_api(settings: Settings, stats_out: Connection) -> None:
    """The child process: the service's own app, plus a hook that reports the booking stats."""
    configure_logging(settings.log_level)
    stats = BookingStats()
    app = create_app(settings, booking_observer=stats)

    async def report_stats(app: web.Application) -> None:
        # on_cleanup runs after the app's own cleanup, so the coalescer has drained by now.
        stats_out.send(dataclasses.asdict(stats))

    app.on_cleanup.append(report_stats)
    web.run_app(app, host=settings.http_host, port=settings.http_port, access_log=None, print=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- database set-up and checks


async def create_shows(database_url: str, count: int) -> list[uuid.UUID]:
    engine = create_engine(database_url, pool_size=5)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        start = datetime(2026, 12, 31, 20, tzinfo=UTC)
        shows = [
            NewShow(uuid.uuid4(), TICKETS_PER_SHOW, start, "Bench", "Hall") for _ in range(count)
        ]
        ids: list[uuid.UUID] = []
        for chunk in range(0, count, 50):
            made = await asyncio.gather(
                *(create_show(sessions, s) for s in shows[chunk : chunk + 50])
            )
            ids.extend(show_id for show_id, _ in made)
        return ids
    finally:
        await engine.dispose()


async def check_invariants(database_url: str, created: int, stored: int) -> None:
    """No overbooking; counters, bookings and outbox rows agree; one 201 per booking; one
    stored key per keyed answer."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        found: dict[str, object] = dict(await database_problems(conn))
        bookings = await conn.fetchval("SELECT count(*) FROM bookings")
        keys = await conn.fetchval("SELECT count(*) FROM idempotency_keys")
    finally:
        await conn.close()
    if bookings != created:
        found["bookings vs 201 answers"] = f"{bookings} vs {created}"
    if keys != stored:
        found["stored keys vs keyed answers"] = f"{keys} vs {stored}"
    if found:
        raise BrokenInvariant(f"invariants broken: {found}")


# ---------------------------------------------------------------- the report


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def describe_machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal")))
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    env = pg_environment()
    version = subprocess.run(
        ["psql", "-At", "-d", "postgres", "-c", "SHOW server_version"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "postgres": version,
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }


def render(machine: dict[str, Any], rows: list[Row], elapsed: float) -> str:
    by_name = {row.name: row for row in rows if not row.baseline}
    textbook = by_name[TEXTBOOK]
    lines = [
        f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"PostgreSQL {machine['postgres']}, Python {machine['python']}; load average before "
        f"{machine['load_before'][0]:.2f}, after {os.getloadavg()[0]:.2f}; bench took "
        f"{elapsed:.0f} s.",
        "",
        "| run | clients | req/s | p50 ms | p99 ms | accepted | rejected | retries/booking "
        "| bookings/tx | API RSS MB | x baseline | x textbook |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        base = by_name.get(row.baseline)
        vs_base = row.rate / base.rate if base else None
        vs_textbook = row.rate / textbook.rate if base else None
        cells = [
            row.name,
            str(row.clients),
            f"{row.rate:,.0f}",
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
            f"{row.accepted:,}",
            f"{row.rejected:,}" + (f" + {row.busy:,} busy (503)" if row.busy else ""),
            optional(row.retries_per_booking, ".3f"),
            optional(row.bookings_per_tx, ".1f"),
            optional(row.rss_mb, ".0f"),
            optional(vs_base, ".2f"),
            optional(vs_textbook, ".1f"),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    lines += ["", *targets(rows, by_name, textbook)]
    return "\n".join(lines) + "\n"


def targets(rows: list[Row], baselines: dict[str, Row], textbook: Row) -> list[str]:
    service = {(row.name, row.clients): row for row in rows if row.baseline}
    hot = baselines[HOT_BASELINE].rate
    spread = baselines[SPREAD_BASELINE].rate
    hot20, hot100 = service[(f"service, {HOT}", 20)], service[(f"service, {HOT}", 100)]
    spread20 = service[(f"service, {SPREAD}", 20)]
    keyed20, keyed100 = service[(f"service, {KEYED}", 20)], service[(f"service, {KEYED}", 100)]
    checks = [
        ("hot show, 20 clients ≥ 1.5x pgbench one per tx", hot20.rate / hot, 1.5),
        ("hot show, 100 clients ≥ 3x pgbench one per tx (20 clients)", hot100.rate / hot, 3.0),
        ("hot show, 20 clients ≥ 12x the textbook way", hot20.rate / textbook.rate, 12.0),
        ("1,000 shows, 20 clients ≥ 0.8x pgbench spread", spread20.rate / spread, 0.8),
        ("the same with Idempotency-Keys: hot show, 20 clients ≥ 1.5x", keyed20.rate / hot, 1.5),
        ("hot show with keys, 100 clients ≥ 3x", keyed100.rate / hot, 3.0),
        ("hot show with keys, 20 clients ≥ 12x the textbook way", keyed20.rate / textbook.rate, 12),
    ]
    lines = ["| target | measured | met |", "|---|--:|:-:|"]
    lines += [f"| {what} | {got:.2f}x | {mark(got >= want)} |" for what, got, want in checks]
    for row in (hot20, spread20, keyed20):
        lines.append(
            f"| p99 ≤ 50 ms, {row.name}, 20 clients | {row.p99_ms:.1f} ms | "
            f"{mark(row.p99_ms <= 50)} |"
        )
    return lines


def optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def mark(met: bool) -> str:
    return "yes" if met else "**no**"


if __name__ == "__main__":
    sys.exit(main())
