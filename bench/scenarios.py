"""The API under wrk against pgbench, in the same run: the booking scenarios.

For every scenario (and round), first its pgbench baseline (bench/pgbench.py: 20 clients,
schema re-run), then, for every variant, a fresh API process (`python -m service api` by
default, as deployed) in a database migrated once by `python -m service migrate`; shows are made
over HTTP (POST /shows, 100 million tickets, so none sells out). wrk (bench/wrk.py) books 1
ticket per request, a warm-up run first, then the measured one; the API's resident memory is
read from /proc/<pid>/status (VmHWM: peak, VmRSS: at the end), before it is stopped (SIGTERM).

  hot-20, hot-100     20 / 100 connections on one hot show      baseline: pgbench hot, 20 clients
  spread-20/-100      20 / 100 connections over 1,000 shows     baseline: pgbench spread, 20 clients
  hot-1000            1,000 connections on one hot show         baseline: pgbench hot, 20 clients

After each run the tables are checked (bench/invariants.py) and the bookings are held against
the 201 answers: wrk drops the requests in flight when it stops, and those may still be booked,
so up to one booking per connection and wrk run may lack its 201. A broken invariant, or an
answer other than 201, 400 and 503, is a problem of the run (the bench exits 1).

A variant is NAME=COMMAND: another way to start the API (a launcher that patches something, a
scratch copy), run with the same environment and working directory (this repository). Its
"x first" column divides its rate by that of the first variant's runs nearest in time (same
scenario and round): that is how a change is measured against the unchanged service on a noisy
machine. Each round starts with the next variant; --paired runs the first variant again before
every other one, so each has a reference run right next to it; medians over runs close the
table (the first variant's own "x first", against its neighbouring runs, is the noise). The API's
CPU time per answer (from /proc/<pid>/stat over the measured run) is shown beside the rate:
when other work shares the cores, it moves much less than the rate does, and the API (one
Python thread) is CPU-bound under this load, so its inverse is what the rate would gain.
"""

from __future__ import annotations

import dataclasses
import shlex
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench import invariants, pgbench, service
from bench.wrk import WrkResult, run_wrk
from tests.support.database import new_database_url

SPREAD_SHOWS = 1_000
EXPECTED_STATUSES = frozenset({201, 400, 503})


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    spread: bool  # over SPREAD_SHOWS shows, else one hot show

    @property
    def baseline_script(self) -> str:
        return pgbench.SPREAD if self.spread else pgbench.HOT


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
    env: dict[str, str]  # added to every service process's environment (tracing)


@dataclasses.dataclass(frozen=True)
class ServiceRun:
    scenario: Scenario
    variant: str
    round: int
    baseline: pgbench.Baseline
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


def default_variant() -> Variant:
    return Variant("service", list(service.API))


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
    service.migrate(database_url)
    pgbench.create_database(baseline_db)
    try:
        spread: list[str] = []
        if any(scenario.spread for scenario in options.scenarios):
            # Made beforehand, so that no run's commit count includes 1,000 show inserts.
            env = service.environment(database_url, **options.env)
            with service.api(options.variants[0].command, env) as api:
                spread = service.create_shows(api.base_url, SPREAD_SHOWS)
        runs: list[ServiceRun] = []
        for round_number in range(1, options.rounds + 1):
            for scenario in options.scenarios:
                runs += run_scenario(
                    options, database_url, baseline_db, scenario, round_number, spread
                )
        return runs
    finally:
        pgbench.drop_database(baseline_db)
        invariants.drop_database(database_url)


def run_scenario(
    options: Options,
    database_url: str,
    baseline_db: str,
    scenario: Scenario,
    round_number: int,
    spread: list[str],
) -> list[ServiceRun]:
    baseline = pgbench.run(options.scripts, baseline_db, scenario.baseline_script, options.duration)
    runs = []
    for variant in round_plan(options, round_number):
        run = run_service(options, database_url, scenario, variant, round_number, baseline, spread)
        print(f"    -> {summarize(run)}", file=sys.stderr, flush=True)
        runs.append(run)
    return runs


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


@dataclasses.dataclass(frozen=True)
class Measured:
    """What one API process saw: the warm-up and measured wrk runs, its CPU and memory."""

    warmup: WrkResult
    load: WrkResult
    cpu_seconds: float
    peak_rss_mb: float
    end_rss_mb: float


def measure(options: Options, api: service.Child, shows: list[str], connections: int) -> Measured:
    def load(seconds: float) -> WrkResult:
        return run_wrk(
            api.base_url,
            shows,
            connections=connections,
            seconds=seconds,
            threads=options.wrk_threads,
        )

    warmup = load(options.warmup)
    cpu_before = api.cpu_seconds()
    measured = load(options.duration)
    cpu = api.cpu_seconds() - cpu_before
    return Measured(warmup, measured, cpu, *api.rss_mb())


def run_service(
    options: Options,
    database_url: str,
    scenario: Scenario,
    variant: Variant,
    round_number: int,
    baseline: pgbench.Baseline,
    spread: list[str],
) -> ServiceRun:
    """One fresh API process, one warm-up and one measured wrk run, then the checks. `spread`:
    the ids of the 1,000 shows of the spread scenarios."""
    print(f"  {scenario.name}, {variant.name}, round {round_number} ...", file=sys.stderr)
    before = invariants.counters(database_url)
    with service.api(variant.command, service.environment(database_url, **options.env)) as api:
        shows = spread if scenario.spread else service.create_shows(api.base_url, 1)
        got = measure(options, api, shows, scenario.connections)
    time.sleep(0.5)  # the API's backends flush their statistics as they exit
    after = invariants.counters(database_url)
    created = got.warmup.count(201) + got.load.count(201)
    in_flight = 2 * scenario.connections  # at most one unanswered request per connection and run
    problems = invariants.check(database_url, before, after, created, in_flight)
    problems += answers_problems(got.warmup, "warm-up") + answers_problems(got.load, "measured")
    return ServiceRun(
        scenario=scenario,
        variant=variant.name,
        round=round_number,
        baseline=baseline,
        load=got.load,
        api_cpu_seconds=got.cpu_seconds,
        peak_rss_mb=got.peak_rss_mb,
        end_rss_mb=got.end_rss_mb,
        bookings_per_commit=(after.bookings - before.bookings)
        / max(after.commits - before.commits, 1),
        rollbacks=after.rollbacks - before.rollbacks,
        problems=problems,
    )


def answers_problems(load: WrkResult, run: str) -> list[str]:
    unexpected = {s: n for s, n in load.statuses.items() if s not in EXPECTED_STATUSES}
    problems = [f"{run}: unexpected answers {unexpected}"] if unexpected else []
    if load.failures:
        problems.append(f"{run}: requests without an answer: {load.errors}")
    return problems


# ---------------------------------------------------------------- the report


def summarize(run: ServiceRun) -> str:
    load = run.load
    return (
        f"{load.rate:,.0f} req/s ({run.ratio:.2f}x pgbench {run.baseline.rate:,.0f}), "
        f"API {run.cpu_us_per_request:.0f} µs CPU/req, {run.cpu_share:.2f} cores, "
        f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, {load.describe_statuses()}, "
        f"RSS {run.peak_rss_mb:.0f} MB" + (f", PROBLEMS: {run.problems}" if run.problems else "")
    )


def render(runs: list[ServiceRun], options: Options) -> list[str]:
    """Every run's figures, and with rounds or variants, the medians per scenario and variant."""
    lines = [
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
    return lines


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
