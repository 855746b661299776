"""The issue's targets, measured: one row per target, `met` yes/no (None: reported, no target).

`Row` is also what bench/consumer_drain.py's `run(quick)` returns."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable

from bench.http_floor import HttpFloor
from bench.pipeline import PipelineRun
from bench.scenarios import ServiceRun

HOT_RATIO = "x pgbench one per tx (hot, 20 clients)"


@dataclasses.dataclass(frozen=True)
class Row:
    measurement: str
    measured: str
    target: str
    met: bool | None  # None: reported only


def render(rows: list[Row]) -> list[str]:
    lines = ["| measurement | measured | target | met |", "|---|--:|--:|:-:|"]
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.measurement} | {row.measured} | {row.target} | {met} |")
    return lines


def median_of(runs: list[ServiceRun], figure: Callable[[ServiceRun], float]) -> float:
    return statistics.median(figure(run) for run in runs)


def api_rows(runs: list[ServiceRun], reference: str, floor: HttpFloor | None = None) -> list[Row]:
    """Targets 1-3 and 6, over the reference variant's runs (the median, with rounds); and
    aiohttp's own cost per answer beside what hot-100's target needs."""

    def of(name: str) -> list[ServiceRun]:
        return [run for run in runs if run.scenario.name == name and run.variant == reference]

    rows = rate_and_p99(of("hot-20"), "hot show, 20 clients", 2.5, 50, HOT_RATIO)
    rows += rate_and_p99(of("hot-100"), "hot show, 100 clients", 4.5, 50, HOT_RATIO)
    spread = "x pgbench spread (1,000 shows, 20 clients)"
    rows += rate_and_p99(of("spread-100"), "1,000 shows, 100 clients", 1.0, 100, spread)
    rows += thousand_rows(of("hot-1000"))
    return rows + ([floor_row(floor, of("hot-100"))] if floor else [])


def floor_row(floor: HttpFloor, hot_100: list[ServiceRun]) -> Row:
    """Bare aiohttp's CPU per answer, and what 4.5x hot-100 would need of one full core."""
    measured = (
        f"{floor.cpu_us_per_request:,.0f} µs CPU per answer ({floor.rate:,.0f} req/s,"
        f" {floor.cpu_share:.2f} of a core)"
    )
    if hot_100:
        base = median_of(hot_100, lambda run: run.baseline.rate)
        api = median_of(hot_100, lambda run: run.cpu_us_per_request)
        share = median_of(hot_100, lambda run: run.cpu_share)
        needed = 1e6 / (4.5 * base)
        measured += (
            f"; hot-100's 4.5x needs ≤ {needed:,.0f} µs per answer from a full core, the API"
            f" spent {api:,.0f} at {share:.2f} of a core"
        )
    return Row(
        "API floor: bare aiohttp on uvloop, the same POST, 100 clients", measured, "reported", None
    )


def rate_and_p99(
    runs: list[ServiceRun], what: str, ratio: float, p99_ms: float, versus: str
) -> list[Row]:
    if not runs:
        return [Row(what, "not run", f"≥ {ratio}{versus}", None)]
    got = median_of(runs, lambda run: run.ratio)
    rate = median_of(runs, lambda run: run.load.rate)
    base = median_of(runs, lambda run: run.baseline.rate)
    p99 = median_of(runs, lambda run: run.load.p99_ms)
    return [
        Row(
            f"{what}: rate",
            f"{got:.2f}x ({rate:,.0f} req/s / {base:,.0f} tx/s)",
            f"≥ {ratio}{versus}",
            got >= ratio,
        ),
        Row(f"{what}: p99", f"{p99:.1f} ms", f"≤ {p99_ms:.0f} ms", p99 <= p99_ms),
    ]


def thousand_rows(runs: list[ServiceRun]) -> list[Row]:
    what = "1,000 connections, hot show"
    if not runs:
        return [Row(what, "not run", "only 201/503, RSS ≤ 200 MB", None)]
    statuses = "; ".join(run.load.describe_statuses() for run in runs)
    only = all(set(run.load.statuses) <= {201, 503} and not run.load.failures for run in runs)
    rss = max(run.peak_rss_mb for run in runs)
    return [
        Row(f"{what}: answers", statuses, "only 201 and 503", only),
        Row(f"{what}: API RSS (VmHWM)", f"{rss:.0f} MB", "≤ 200 MB", rss <= 200),
    ]


def pipeline_rows(runs: list[PipelineRun]) -> list[Row]:
    """The targets, from the run of median rate (with rounds, the other runs are in their own
    table: on a noisy VM one run is one draw)."""
    what = "pipeline (api + relay + consumers), hot show, 100 clients"
    if not runs:
        return [Row(what, "not run", "", None)]
    ordered = sorted(runs, key=lambda r: r.ratio)
    run = ordered[len(ordered) // 2]
    spread = f", median of {len(runs)}: {ordered[0].ratio:.2f} to {ordered[-1].ratio:.2f}x"
    delivered = run.delivered_after
    caught_up = run.caught_up_after
    p50, p99, worst = run.lag_ms
    return [
        Row(
            f"{what}: rate",
            f"{run.ratio:.2f}x ({run.load.rate:,.0f} req/s / {run.baseline.rate:,.0f} tx/s"
            f"{spread if len(runs) > 1 else ''})",
            f"≥ 2.5{HOT_RATIO}",
            run.ratio >= 2.5,
        ),
        Row(
            f"{what}: every BookingMade on RabbitMQ ({run.bookings:,} bookings)",
            "not within 60 s" if delivered is None else f"{delivered:.2f} s after the load",
            "≤ 2 s after the load's end",
            delivered is not None and delivered <= 2.0,
        ),
        Row(
            f"{what}: show_sales lag, booking written → applied (p50 / p99 / max)",
            f"{p50:,.0f} / {p99:,.0f} / {worst:,.0f} ms over {run.applied:,} events",
            "reported",
            None,
        ),
        Row(
            f"{what}: show_sales caught up",
            "not within the wait" if caught_up is None else f"{caught_up:.1f} s after the load",
            "reported",
            None,
        ),
        Row(f"{what}: CPU per booking, by process", cpu_per_booking(run), "reported", None),
        Row(
            f"{what}: CPU floor per booking (relay, show_sales and RabbitMQ at raw aio-pika's)",
            floor_per_booking(run),
            "reported",
            None,
        ),
    ]


def pipeline_runs(runs: list[PipelineRun]) -> list[str]:
    """Every pipeline run, in the order run."""
    lines = [
        "| round | req/s | baseline tx/s | x baseline | delivered s | caught up s"
        " | CPU per booking | floor |",
        "|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for number, run in enumerate(runs, 1):
        delivered = "-" if run.delivered_after is None else f"{run.delivered_after:.2f}"
        caught_up = "-" if run.caught_up_after is None else f"{run.caught_up_after:.1f}"
        lines.append(
            f"| {number} | {run.load.rate:,.0f} | {run.baseline.rate:,.0f} | {run.ratio:.2f} |"
            f" {delivered} | {caught_up} | {cpu_per_booking(run)} | {floor_per_booking(run)} |"
        )
    return lines


def cpu_per_booking(run: PipelineRun) -> str:
    """Where the two cores go, per booking, and what they would allow at the target rate."""
    shares = run.cpu_per_booking_us
    return f"{_shares(shares)} (2 cores sustain 2.5x at {_allowed_us(run):,.0f})"


def floor_per_booking(run: PipelineRun) -> str:
    """The floor under the pipeline's CPU per booking, and whether 2.5x is within its reach."""
    shares = run.floor_per_booking_us()
    if not shares:
        return "not measured"
    allowed = _allowed_us(run)
    reach = "within reach" if sum(shares.values()) <= allowed else "out of reach on this machine"
    return f"{_shares(shares)}; 2 cores sustain 2.5x at {allowed:,.0f}: {reach}"


def _shares(shares: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {us:,.0f}" for name, us in shares.items())
    return f"{parts}: {sum(shares.values()):,.0f} µs"


def _allowed_us(run: PipelineRun) -> float:
    # Sustained: a 10 s load can run past it for a while, the relay and consumers falling behind.
    return 2 * 1e6 / (2.5 * run.baseline.rate)  # 2 cores at 2.5x pgbench


def relay_rows(table: list[tuple[str, str, str, str]]) -> list[Row]:
    """Issue 4's targets, read from bench/relay.py's table: throughput ≥ 0.8x raw aio-pika;
    commit → confirmed p99 ≤ 50 ms at 500 bookings/s (measured as commit → delivered)."""
    rows = []
    for measurement, relay, _baseline, ratio in table:
        if measurement.startswith("throughput"):
            got = float(ratio.rstrip("x"))
            rows.append(
                Row(f"relay {measurement}", f"{relay}, {ratio} raw", "≥ 0.8x raw", got >= 0.8)
            )
        elif "500 bookings/s" in measurement:
            p99 = float(relay.split(":")[1].split("/")[1])
            rows.append(
                Row(
                    f"relay {measurement}",
                    relay,
                    "p99 ≤ 50 ms (issue 4)",
                    not math.isnan(p99) and p99 <= 50,
                )
            )
    return rows
