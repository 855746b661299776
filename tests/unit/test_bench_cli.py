"""`python -m bench` parses its options and imports every part (API scenarios, pipeline,
relay, targets); nothing here runs a load or asserts a figure: performance is for `make bench`."""

from __future__ import annotations

import sys

import pytest

import bench.__main__ as cli
from bench import broker_floor, consumer_drain, scenarios, targets
from bench.http_floor import HttpFloor
from bench.pgbench import Baseline
from bench.pipeline import PipelineRun
from bench.scenarios import ServiceRun
from bench.targets import Row, render
from bench.wrk import WrkResult


def test_the_defaults_run_every_part_and_scenario() -> None:
    plan = cli.parse([])
    assert plan.parts == list(cli.PARTS)
    assert [s.name for s in plan.options.scenarios] == [
        "hot-20",
        "hot-100",
        "spread-100",
        "hot-1000",
    ]
    assert (plan.options.duration, plan.quick, plan.export_traces) == (10.0, False, False)
    assert [v.name for v in plan.options.variants] == ["service"]


def test_quick_is_3_s_runs_and_a_short_relay_bench() -> None:
    plan = cli.parse(["--quick"])
    assert plan.options.duration == 3.0
    assert plan.relay_events < 20_000
    assert plan.consumer_wait < cli.parse([]).consumer_wait


def test_variants_rounds_and_parts() -> None:
    variants = ["--variant", "a=python -m service api", "--variant", "b=./launch x"]
    plan = cli.parse(["--only", "api", "--scenarios", "hot-100", "--rounds", "3", *variants])
    assert plan.parts == ["api"]
    assert plan.options.rounds == 3
    assert plan.options.variants[0].command[0] == sys.executable  # "python": this interpreter
    assert plan.options.variants[1].command == ["./launch", "x"]


@pytest.mark.parametrize("argv", [["--scenarios", "hot-7"], ["--only", "api,nothing"]])
def test_unknown_names_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse(argv)


async def test_the_consumer_drain_part_calls_run_with_quick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bool] = []

    async def run(quick: bool) -> list[Row]:
        calls.append(quick)
        return [Row("drain", "2.1x", "≥ 2.0x", True)]

    monkeypatch.setattr(consumer_drain, "run", run)
    assert await cli.consumer_drain(quick=True) == ([Row("drain", "2.1x", "≥ 2.0x", True)], [])
    assert calls == [True]


async def test_a_consumer_drain_that_fails_is_a_failed_row_and_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(quick: bool) -> list[Row]:
        raise RuntimeError("no broker")

    monkeypatch.setattr(consumer_drain, "run", broken)
    rows, problems = await cli.consumer_drain(quick=True)
    assert [row.met for row in rows] == [False]
    assert len(problems) == 1 and "no broker" in problems[0]


def test_the_targets_table_marks_each_row() -> None:
    lines = render([Row("a", "1", "≥ 2", False), Row("b", "3", "reported", None)])
    assert lines[2:] == ["| a | 1 | ≥ 2 | **no** |", "| b | 3 | reported | - |"]


def _pipeline_run(baseline_rate: float, floor: broker_floor.Floor | None) -> PipelineRun:
    load = WrkResult(100, 2, 10.0, 25_000, 2_500.0, 1, 2, 3, 4, 5, 1, {201: 25_000}, {})
    cpu = {"api": 200.0, "relay": 200.0, "consumers": 250.0, "RabbitMQ": 200.0}
    return PipelineRun(
        baseline=Baseline("hot", 20, baseline_rate, 1.0, 2.0, 10_000),
        load=load,
        bookings=25_000,
        delivered_after=0.1,
        caught_up_after=0.2,
        applied=25_000,
        lag_ms=(1.0, 2.0, 3.0),
        api_peak_rss_mb=100.0,
        cpu_per_booking_us=cpu | {"PostgreSQL": 80.0, "wrk": 20.0},
        problems=[],
        floor=floor,
    )


def test_the_pipeline_floor_takes_the_relay_consumers_and_rabbitmq_at_raw_cost() -> None:
    raw = broker_floor.Floor(publish_us=150.0, consume_us=100.0, rabbitmq_us=110.0)
    # 2 cores at 2.5x of 1,000 tx/s: 800 µs per booking; the floor is 200+80+20+150+100+110.
    within = targets.floor_per_booking(_pipeline_run(1_000.0, raw))
    assert within.endswith(": 660 µs; 2 cores sustain 2.5x at 800: within reach")
    assert "relay" not in within and "raw publish 150" in within
    # At 1,400 tx/s two cores allow 571 µs: the same floor is out of reach.
    assert targets.floor_per_booking(_pipeline_run(1_400.0, raw)).endswith(
        "at 571: out of reach on this machine"
    )
    assert targets.floor_per_booking(_pipeline_run(1_000.0, None)) == "not measured"


def test_the_api_floor_row_says_what_hot_100_needs_of_a_full_core() -> None:
    floor = HttpFloor(rate=12_000.0, cpu_us_per_request=80.0, cpu_share=1.0)
    assert "needs" not in targets.floor_row(floor, []).measured
    hot_100 = scenarios.SCENARIOS["hot-100"]
    load = WrkResult(100, 2, 10.0, 40_000, 4_000.0, 1, 2, 3, 4, 5, 1, {201: 40_000}, {})
    run = ServiceRun(
        hot_100, "service", 1, Baseline("hot", 20, 1_600.0, 1.0, 2.0, 1), load, 8.0, 100.0,
        100.0, 50.0, 0, [],
    )  # fmt: skip
    # 4.5x of 1,600 tx/s from one core: 139 µs per answer; the API spent 8 s on 40,000.
    assert targets.floor_row(floor, [run]).measured == (
        "80 µs CPU per answer (12,000 req/s, 1.00 of a core); hot-100's 4.5x needs ≤ 139 µs per"
        " answer from a full core, the API spent 200 at 0.80 of a core"
    )
