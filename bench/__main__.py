"""`make bench`: every measurement issue 15's targets name, in one run, each against its
pgbench (or raw aio-pika) baseline measured in the same run, and one table of measured vs target.

    apt-get install -y wrk                          # the load generator (Debian package)
    uv run --frozen python -m bench                 # everything, ~5 min
    uv run --frozen python -m bench --quick         # 3 s runs: a smoke test, ~2 min
    uv run --frozen python -m bench --only api --scenarios hot-100 --rounds 3 --paired \\
        --variant unchanged='python -m service api' --variant lever='python /tmp/lever_api.py'

Parts (--only, comma-separated; default all, in this order):
  api       the API alone under wrk (bench/scenarios.py): hot-20, hot-100, spread-100, hot-1000
  pipeline  API, relay and consumers as `make run` starts them, hot show, 100 connections
            (bench/pipeline.py)
  drain     bench/consumer_drain.py: show_sales drains a hot show's backlog, against pgbench
  relay     bench/relay.py: outbox → RabbitMQ throughput and latency against raw aio-pika

Every service process is started as deployed (`python -m service api`, ...): metrics on (every
process serves /metrics, and updates its counters per request), tracing configured as the
environment says. Without --export-traces, OTEL_EXPORTER_OTLP_ENDPOINT is unset as in
compose.yaml: trace context is made and propagated (ids per request, traceparent stored on every
outbox row and sent with every event) but no span is recorded or exported. With it, a local
OTLP sink (bench/otlp_sink.py) receives every span, asyncpg statement spans included.

After every run the tables are checked (bench/invariants.py); a broken invariant or an
unexpected answer makes the exit status 1. The table goes to stdout and bench/results/bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import consumer_drain as drain
from bench import http_floor, pgbench, pipeline, relay, scenarios, targets
from bench.otlp_sink import sink
from bench.targets import Row

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("api", "pipeline", "drain", "relay")
DRAIN = "consumer drain (bench/consumer_drain.py)"


@dataclasses.dataclass(frozen=True)
class Plan:
    options: scenarios.Options
    parts: list[str]
    quick: bool
    export_traces: bool
    consumer_wait: float
    relay_events: int
    relay_seconds: float


def main(argv: list[str] | None = None) -> int:
    plan = parse(argv)
    pgbench.check_tools(plan.options.scripts)
    started = time.monotonic()
    machine = pgbench.describe_machine()
    runs, piped, spans = measure_service(plan)
    api = "api" in plan.parts
    floor = http_floor.measure(plan.options) if api else None
    rows = targets.api_rows(runs, plan.options.variants[0].name, floor) if api else []
    rows += targets.pipeline_rows(piped) if "pipeline" in plan.parts else []
    drained, drain_problems = (
        asyncio.run(consumer_drain(plan.quick)) if "drain" in plan.parts else ([], [])
    )
    rows += drained
    relay_table = measure_relay(plan)
    rows += targets.relay_rows(relay_table)
    header = describe(machine, plan, time.monotonic() - started, spans)
    report = render(header, rows, runs, piped, plan, relay_table)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.md").write_text(report)
    problems = [p for run in runs for p in run.problems] + [p for r in piped for p in r.problems]
    problems += drain_problems
    for problem in problems:
        print(f"BENCH PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def parse(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke test")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="wrk warm-up seconds (>= 1)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every API scenario, and the pipeline"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(scenarios.DEFAULT_SCENARIOS),
        help=f"API scenarios, comma-separated, of {', '.join(scenarios.SCENARIOS)}",
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
    parser.add_argument("--export-traces", action="store_true", help="spans to a local OTLP sink")
    parser.add_argument(
        "--consumer-wait", type=float, default=None, help="s to wait for show_sales"
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--scripts", type=Path, default=pgbench.SCRIPTS, help="pgbench scripts")
    return plan_of(parser, parser.parse_args(argv))


def plan_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Plan:
    names = [name for name in args.scenarios.split(",") if name]
    parts = [part for part in args.only.split(",") if part]
    unknown = [n for n in names if n not in scenarios.SCENARIOS] + [
        p for p in parts if p not in PARTS
    ]
    if unknown:
        parser.error(f"unknown scenarios or parts {unknown}")
    options = scenarios.Options(
        duration=3.0 if args.quick else args.duration,
        warmup=1.0 if args.quick else max(1.0, args.warmup),
        rounds=max(1, args.rounds),
        scenarios=[scenarios.SCENARIOS[name] for name in names],
        variants=[scenarios.parse_variant(s) for s in args.variant]
        or [scenarios.default_variant()],
        scripts=args.scripts,
        wrk_threads=args.wrk_threads,
        paired=args.paired,
        env={},
    )
    wait = args.consumer_wait if args.consumer_wait is not None else (30.0 if args.quick else 180.0)
    return Plan(
        options=options,
        parts=parts,
        quick=args.quick,
        export_traces=args.export_traces,
        consumer_wait=wait,
        relay_events=3_000 if args.quick else 20_000,
        relay_seconds=2.0 if args.quick else 8.0,
    )


def measure_service(
    plan: Plan,
) -> tuple[list[scenarios.ServiceRun], list[pipeline.PipelineRun], str]:
    """The API scenarios and the pipeline (each round), with tracing as planned; and what the
    sink got."""
    with tracing(plan.export_traces) as (env, received):
        options = dataclasses.replace(plan.options, env=env)
        runs = scenarios.run_all(options) if "api" in plan.parts and options.scenarios else []
        rounds = options.rounds if "pipeline" in plan.parts else 0
        piped = [pipeline.run(options, plan.consumer_wait) for _ in range(rounds)]
        return runs, piped, received()


@contextmanager
def tracing(export: bool) -> Iterator[tuple[dict[str, str], Any]]:
    """The tracing environment of the service processes, and a function telling what the sink
    received (or that tracing was not exported)."""
    if not export:
        yield {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, lambda: "tracing on, not exported (no endpoint)"
        return
    with sink() as server:

        def received() -> str:
            batches, size = server.requests, server.received_bytes
            return f"spans exported to a local OTLP sink ({batches:,} batches, {size:,} bytes)"

        yield {"OTEL_EXPORTER_OTLP_ENDPOINT": server.endpoint}, received


async def consumer_drain(quick: bool) -> tuple[list[Row], list[str]]:
    """bench/consumer_drain.py's rows, and its problems: a drain that fails is a failed row and
    exit status 1, while the rest of the bench still reports."""
    print("  drain: show_sales against pgbench ...", file=sys.stderr, flush=True)
    try:
        return await drain.run(quick), []
    except Exception as error:
        traceback.print_exception(error)
        problem = f"{DRAIN} failed: {type(error).__name__}: {error}"
        return [Row(DRAIN, f"failed: {type(error).__name__}", "runs", False)], [problem]


def measure_relay(plan: Plan) -> list[tuple[str, str, str, str]]:
    if "relay" not in plan.parts:
        return []
    print("  relay: throughput and latency against raw aio-pika ...", file=sys.stderr, flush=True)
    return relay.measure(plan.relay_events, plan.relay_seconds)


def describe(machine: dict[str, Any], plan: Plan, elapsed: float, tracing: str) -> str:
    before = " ".join(f"{n:.2f}" for n in machine["load_before"])
    after = " ".join(f"{n:.2f}" for n in os.getloadavg())
    options = plan.options
    return (
        f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"PostgreSQL {machine['postgres']}, Python {machine['python']}; load average "
        f"(1/5/15 min) before {before}, after {after}; wrk {options.wrk_threads} threads, "
        f"{options.warmup:.0f} s warm-up, {options.duration:.0f} s runs; API, relay and "
        f"consumers as deployed, metrics on, {tracing}; took {elapsed:.0f} s."
    )


def render(
    header: str,
    rows: list[Row],
    runs: list[scenarios.ServiceRun],
    piped: list[pipeline.PipelineRun],
    plan: Plan,
    relay_table: list[tuple[str, str, str, str]],
) -> str:
    lines = [header, "", *targets.render(rows)]
    if runs:
        lines += ["", "API runs:", "", *scenarios.render(runs, plan.options)]
    if len(piped) > 1:
        lines += ["", "Pipeline runs:", "", *targets.pipeline_runs(piped)]
    if relay_table:
        lines += ["", "Relay:", "", *relay.table_lines(relay_table)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
