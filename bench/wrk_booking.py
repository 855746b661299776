"""Booking throughput with wrk as the load: the API process against pgbench, in the same run.

    apt-get install -y wrk
    uv run --frozen python -m bench.wrk_booking                 # 4 scenarios, ~2 min
    uv run --frozen python -m bench.wrk_booking --quick         # 3 s runs: a smoke test
    uv run --frozen python -m bench.wrk_booking --scenarios hot-100 --rounds 3 --paired \\
        --variant unchanged='python -m service api' --variant uvloop='python /tmp/uvloop_api.py'

For every scenario (and round), first its pgbench baseline (bench.booking.pgbench: 20 clients,
scripts in ../shared/bench, schema re-run), then, for every variant, a fresh API process
(`python -m service api` by default, as deployed: HTTP_PORT free, LOG_LEVEL=WARNING) in a
database migrated once by `python -m service migrate`; shows are made over HTTP (POST /shows,
100 million tickets, so none sells out). wrk (bench/wrk.py) books 1 ticket per request, a
warm-up run first, then the measured one; the API's resident memory is read from
/proc/<pid>/status (VmHWM: peak, VmRSS: at the end), before it is stopped (SIGTERM).

  hot-20, hot-100     20 / 100 connections on one hot show      baseline: pgbench hot, 20 clients
  spread-20/-100      20 / 100 connections over 1,000 shows     baseline: pgbench spread, 20 clients
  hot-1000            1,000 connections on one hot show         baseline: pgbench hot, 20 clients

After each run the tables are checked (bench.booking's invariants: no overbooking; counters,
bookings and outbox rows agree; one event per booking) and the bookings are held against the
201 answers: wrk drops the requests in flight when it stops, and those may still be booked, so
up to one booking per connection and wrk run may lack its 201. A broken invariant, or an
answer other than 201, 400 and 503, makes the exit status 1.

A variant is NAME=COMMAND: another way to start the API (a launcher that patches something, a
scratch copy), run with the same environment and working directory (this repository). Its
"x first" column divides its rate by that of the first variant's runs nearest in time (same
scenario and round): that is how a change is measured against the unchanged service on a noisy
machine. Each round starts with the next variant; --paired runs the first variant again before
every other one, so each has a reference run right next to it; medians over runs close the
table (the first variant's own "x first", against its neighbouring runs, is the noise). The API's
CPU time per answer (from /proc/<pid>/stat over the measured run) is shown beside the rate:
when other work shares the cores, it moves much less than the rate does, and the API (one
Python thread) is CPU-bound under this load, so its inverse is what the rate would gain. The table
goes to stdout and bench/results/wrk_booking.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import asyncpg

from bench import booking
from bench.wrk import WrkResult, run_wrk
from tests.support.database import asyncpg_dsn, new_database_url
from tests.support.database import drop_database as drop_test_database
from tests.support.invariants import WHOLE_DATABASE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SPREAD_SHOWS = 1_000
EXPECTED_STATUSES = frozenset({201, 400, 503})


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    spread: bool  # over SPREAD_SHOWS shows, else one hot show

    @property
    def baseline_script(self) -> str:
        return "one_per_tx_spread.sql" if self.spread else "one_per_tx_hot.sql"

    @property
    def baseline_name(self) -> str:
        return booking.SPREAD_BASELINE if self.spread else booking.HOT_BASELINE


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("hot-20", 20, spread=False),
        Scenario("hot-100", 100, spread=False),
        Scenario("spread-20", 20, spread=True),
        Scenario("spread-100", 100, spread=True),
        Scenario("hot-1000", 1000, spread=False),
    ]
}
DEFAULT_SCENARIOS = ["hot-20", "hot-100", "spread-100", "hot-1000"]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    command: list[str]


@dataclasses.dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    rounds: int
    scenarios: list[Scenario]
    variants: list[Variant]
    scripts: Path
    wrk_threads: int
    paired: bool


@dataclasses.dataclass(frozen=True)
class ServiceRun:
    scenario: Scenario
    variant: str
    round: int
    baseline: booking.Row
    load: WrkResult
    # CPU time the API used during the measured run: per answer, a cost that other processes
    # on the machine disturb far less than the rate; per second, how much of a core it had.
    api_cpu_seconds: float
    peak_rss_mb: float  # VmHWM
    end_rss_mb: float  # VmRSS when the run ended
    bookings_per_commit: float
    rollbacks: int  # xact_rollback of the service's database during the process's life
    problems: list[str]

    @property
    def ratio(self) -> float:
        return self.load.rate / self.baseline.rate

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.api_cpu_seconds / max(self.load.requests, 1)

    @property
    def cpu_share(self) -> float:
        """Cores the API process kept busy (at most 1: one Python thread does the work)."""
        return self.api_cpu_seconds / self.load.seconds


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    booking.check_tools(options.scripts)
    started = time.monotonic()
    machine = booking.describe_machine()
    runs = run_all(options)
    report = render(machine, runs, options, time.monotonic() - started)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "wrk_booking.md").write_text(report)
    return 1 if any(run.problems for run in runs) else 0


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wrk_booking",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="wrk warm-up seconds (>= 1)")
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke test")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every scenario")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="a way to start the API (repeatable; default: service='python -m service api')",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run the first variant again before every other one (and once more at the end)",
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--scripts", type=Path, default=booking.SCRIPTS, help="pgbench scripts")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios.split(",") if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    return Options(
        duration=3.0 if args.quick else args.duration,
        warmup=1.0 if args.quick else max(1.0, args.warmup),
        rounds=max(1, args.rounds),
        scenarios=[SCENARIOS[name] for name in args.scenarios.split(",")],
        variants=[parse_variant(spec) for spec in args.variant] or [default_variant()],
        scripts=args.scripts,
        wrk_threads=args.wrk_threads,
        paired=args.paired,
    )


def default_variant() -> Variant:
    return Variant("service", [sys.executable, "-m", "service", "api"])


def parse_variant(spec: str) -> Variant:
    name, sep, command = spec.partition("=")
    if not sep or not name or not command.strip():
        raise SystemExit(f"--variant wants NAME=COMMAND, got {spec!r}")
    argv = shlex.split(command)
    # "python" means this interpreter (the project's venv), not whatever is first on PATH.
    return Variant(name, [sys.executable, *argv[1:]] if argv[0] == "python" else argv)


# ---------------------------------------------------------------- one bench run


def run_all(options: Options) -> list[ServiceRun]:
    database_url = new_database_url("bench_service")
    baseline_db = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    env = booking.pg_environment()
    migrate(database_url)
    subprocess.run(["createdb", baseline_db], env=env, check=True)
    try:
        spread: list[str] = []
        if any(scenario.spread for scenario in options.scenarios):
            # Made beforehand, so that no run's commit count includes 1,000 show inserts.
            with api_process(options.variants[0].command, database_url) as api:
                spread = create_shows(api.base_url, SPREAD_SHOWS)
        runs: list[ServiceRun] = []
        for round_number in range(1, options.rounds + 1):
            for scenario in options.scenarios:
                baseline = run_baseline(options, env, baseline_db, scenario)
                for variant in round_plan(options, round_number):
                    run = run_service(
                        options, database_url, scenario, variant, round_number, baseline, spread
                    )
                    print(f"    -> {summarize(run)}", file=sys.stderr, flush=True)
                    runs.append(run)
        return runs
    finally:
        subprocess.run(["dropdb", "--force", baseline_db], env=env, check=False)
        drop_database(database_url)


def round_plan(options: Options, round_number: int) -> list[Variant]:
    """The variants in the order one round runs them. Each round starts with another one, so
    that none always runs first, or last. Paired: the first variant (the reference) runs before
    each other one and after the last, so that every variant has a reference run next to it."""
    if not options.paired:
        by = (round_number - 1) % len(options.variants)
        return options.variants[by:] + options.variants[:by]
    reference, others = options.variants[0], options.variants[1:]
    by = (round_number - 1) % max(len(others), 1)
    plan = []
    for variant in others[by:] + others[:by]:
        plan += [reference, variant]
    return [*plan, reference]


def run_baseline(options: Options, env: dict[str, str], db: str, scenario: Scenario) -> booking.Row:
    pgbench_options = booking.Options(
        duration=options.duration, warmup=options.warmup, scripts=options.scripts
    )
    return booking.pgbench(
        pgbench_options, env, db, scenario.baseline_script, scenario.baseline_name
    )


def run_service(
    options: Options,
    database_url: str,
    scenario: Scenario,
    variant: Variant,
    round_number: int,
    baseline: booking.Row,
    spread: list[str],
) -> ServiceRun:
    """One fresh API process, one warm-up and one measured wrk run, then the checks. `spread`:
    the ids of the 1,000 shows of the spread scenarios."""
    print(
        f"  {scenario.name}, {variant.name}, round {round_number} ...", file=sys.stderr, flush=True
    )
    before = database_counters(database_url)
    with api_process(variant.command, database_url) as api:
        shows = spread if scenario.spread else create_shows(api.base_url, 1)

        def load(seconds: float) -> WrkResult:
            return run_wrk(
                api.base_url,
                shows,
                connections=scenario.connections,
                seconds=seconds,
                threads=options.wrk_threads,
            )

        warmup = load(options.warmup)
        cpu_before = api.cpu_seconds()
        measured = load(options.duration)
        cpu = api.cpu_seconds() - cpu_before
        peak_rss_mb, end_rss_mb = api.rss_mb()
    time.sleep(0.5)  # the API's backends flush their statistics as they exit
    after = database_counters(database_url)
    created = warmup.count(201) + measured.count(201)
    in_flight = 2 * scenario.connections  # at most one unanswered request per connection and run
    problems = check(database_url, before, after, created, in_flight)
    problems += answers_problems(warmup, "warm-up") + answers_problems(measured, "measured")
    commits = after.commits - before.commits
    return ServiceRun(
        scenario=scenario,
        variant=variant.name,
        round=round_number,
        baseline=baseline,
        load=measured,
        api_cpu_seconds=cpu,
        peak_rss_mb=peak_rss_mb,
        end_rss_mb=end_rss_mb,
        bookings_per_commit=(after.bookings - before.bookings) / max(commits, 1),
        rollbacks=after.rollbacks - before.rollbacks,
        problems=problems,
    )


def answers_problems(load: WrkResult, run: str) -> list[str]:
    unexpected = {s: n for s, n in load.statuses.items() if s not in EXPECTED_STATUSES}
    problems = [f"{run}: unexpected answers {unexpected}"] if unexpected else []
    if load.failures:
        problems.append(f"{run}: requests without an answer: {load.errors}")
    return problems


# ---------------------------------------------------------------- the API as a child process


class ApiProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = log

    def until_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the API was not ready within {within} s: {self.tail()}")

    def rss_mb(self) -> tuple[float, float]:
        """(VmHWM, VmRSS) of the API process, in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmHWM", "VmRSS")))
        return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the API process has used so far (all its threads)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


@contextmanager
def api_process(command: list[str], database_url: str) -> Iterator[ApiProcess]:
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        api = ApiProcess(process, port, log)
        try:
            api.until_ready()
            yield api
        finally:
            api.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_shows(base_url: str, count: int) -> list[str]:
    """`count` shows made through the API itself (POST /shows), on one keep-alive connection."""
    host_port = base_url.removeprefix("http://")
    connection = http.client.HTTPConnection(host_port, timeout=10)
    ids = []
    try:
        for _ in range(count):
            body = json.dumps(
                {
                    "dead_nation_id": str(uuid.uuid4()),
                    "number_of_tickets": booking.TICKETS_PER_SHOW,
                    "start_time": "2026-12-31T20:00:00+00:00",
                    "title": "Bench",
                    "venue": "Hall",
                }
            )
            connection.request("POST", "/shows", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 201:
                raise RuntimeError(f"POST /shows answered {response.status}: {answer!r}")
            ids.append(str(json.loads(answer)["show_id"]))
    finally:
        connection.close()
    return ids


# ---------------------------------------------------------------- the database


def migrate(database_url: str) -> None:
    """`python -m service migrate`: creates the database and runs the migrations."""
    env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-m", "service", "migrate"], cwd=ROOT, env=env, check=True)


@dataclasses.dataclass(frozen=True)
class Counters:
    bookings: int
    commits: int
    rollbacks: int


def database_counters(database_url: str) -> Counters:
    """Bookings so far, and the database's committed and rolled back transactions (read
    before an API process starts and after it has exited, so that its backends' count)."""
    row = booking_query(database_url, COUNTERS)
    return Counters(row["bookings"], row["xact_commit"], row["xact_rollback"])


COUNTERS = """
SELECT (SELECT count(*) FROM bookings) AS bookings, xact_commit, xact_rollback
FROM pg_stat_database WHERE datname = current_database()
"""


def check(
    database_url: str, before: Counters, after: Counters, created: int, in_flight: int
) -> list[str]:
    """bench.booking's invariants, and the new bookings against the 201 answers seen."""
    row = booking_query(database_url, WHOLE_DATABASE)
    problems = [f"{key}: {value}" for key, value in row.items() if value and key != "bookings"]
    booked = after.bookings - before.bookings
    if not created <= booked <= created + in_flight:
        problems.append(f"{booked} bookings for {created} answers 201 (+ {in_flight} in flight)")
    return problems


def booking_query(database_url: str, query: str) -> dict[str, int]:
    async def fetch() -> dict[str, int]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            row = await conn.fetchrow(query)
        finally:
            await conn.close()
        assert row is not None
        return {key: int(value) for key, value in row.items()}

    return asyncio.run(fetch())


def drop_database(database_url: str) -> None:
    asyncio.run(drop_test_database(database_url))


# ---------------------------------------------------------------- the report


def summarize(run: ServiceRun) -> str:
    load = run.load
    return (
        f"{load.rate:,.0f} req/s ({run.ratio:.2f}x pgbench {run.baseline.rate:,.0f}), "
        f"API {run.cpu_us_per_request:.0f} µs CPU/req, {run.cpu_share:.2f} cores, "
        f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, {load.describe_statuses()}, "
        f"RSS {run.peak_rss_mb:.0f} MB" + (f", PROBLEMS: {run.problems}" if run.problems else "")
    )


def render(
    machine: dict[str, Any], runs: list[ServiceRun], options: Options, elapsed: float
) -> str:
    lines = [
        f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"PostgreSQL {machine['postgres']}, Python {machine['python']}; load average before "
        f"{machine['load_before'][0]:.2f}, after {os.getloadavg()[0]:.2f}; "
        f"wrk {options.wrk_threads} threads, {options.warmup:.0f} s warm-up, "
        f"{options.duration:.0f} s runs; took {elapsed:.0f} s.",
        "",
        "| scenario | variant | round | conns | req/s | baseline tx/s | x baseline | x first "
        "| API CPU µs/req | API cores | p50 ms | p99 ms | statuses | bookings/commit | rollbacks "
        "| RSS peak / end MB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    ratios = versus_reference(runs, options.variants[0].name)
    for run, (vs_first, _) in zip(runs, ratios, strict=True):
        cells = [
            run.scenario.name,
            run.variant,
            str(run.round),
            str(run.scenario.connections),
            f"{run.load.rate:,.0f}",
            f"{run.baseline.rate:,.0f}",
            f"{run.ratio:.2f}",
            f"{vs_first:.3f}",
            f"{run.cpu_us_per_request:.0f}",
            f"{run.cpu_share:.2f}",
            f"{run.load.p50_ms:.1f}",
            f"{run.load.p99_ms:.1f}",
            run.load.describe_statuses()
            + (f"; **{'; '.join(run.problems)}**" if run.problems else ""),
            f"{run.bookings_per_commit:.1f}",
            f"{run.rollbacks:,}",
            f"{run.peak_rss_mb:.0f} / {run.end_rss_mb:.0f}",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    if options.rounds > 1 or len(options.variants) > 1:
        lines += ["", *medians(runs, ratios)]
    return "\n".join(lines) + "\n"


def versus_reference(runs: list[ServiceRun], reference: str) -> list[tuple[float, float]]:
    """For every run, (its rate, the reference's CPU per answer ÷ its own) against the reference
    variant's runs nearest to it in time, before and after, in the same scenario and round (their
    mean). A reference run is held against its nearest other reference runs: how far two runs of
    the same code drift apart here, the noise any other ratio must beat."""
    ratios = []
    for index, run in enumerate(runs):
        same = [
            i
            for i, r in enumerate(runs)
            if r.variant == reference
            and (r.scenario, r.round) == (run.scenario, run.round)
            and i != index
        ]
        before = [i for i in same if i < index][-1:]
        after = [i for i in same if i > index][:1]
        neighbours = [runs[i] for i in before + after] or [run]
        rate = statistics.mean(r.load.rate for r in neighbours)
        cpu = statistics.mean(r.cpu_us_per_request for r in neighbours)
        ratios.append((run.load.rate / rate, cpu / run.cpu_us_per_request))
    return ratios


def medians(runs: list[ServiceRun], ratios: list[tuple[float, float]]) -> list[str]:
    """Per scenario and variant: the median over its runs of each figure and ratio."""
    groups: dict[tuple[str, str], list[tuple[ServiceRun, float, float]]] = {}
    for run, (vs_first, cpu_vs_first) in zip(runs, ratios, strict=True):
        groups.setdefault((run.scenario.name, run.variant), []).append(
            (run, vs_first, cpu_vs_first)
        )
    lines = [
        "| scenario | variant | runs | median req/s | median x baseline | median x first "
        "| median API CPU µs/req | first's CPU/req ÷ this (median) | median p99 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (scenario, variant), group in groups.items():
        lines.append(
            f"| {scenario} | {variant} | {len(group)} "
            f"| {statistics.median(r.load.rate for r, _, _ in group):,.0f} "
            f"| {statistics.median(r.ratio for r, _, _ in group):.2f} "
            f"| {statistics.median(v for _, v, _ in group):.3f} "
            f"| {statistics.median(r.cpu_us_per_request for r, _, _ in group):.0f} "
            f"| {statistics.median(c for _, _, c in group):.3f} "
            f"| {statistics.median(r.load.p99_ms for r, _, _ in group):.1f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
