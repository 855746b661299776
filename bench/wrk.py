"""wrk (C, https://github.com/wg/wrk) as the load generator for POST /book-tickets.

    apt-get install -y wrk                     # Debian/Ubuntu package; any wrk 4.x will do

    from bench.wrk import run_wrk
    result = run_wrk("http://127.0.0.1:8080", [show_id], connections=100, seconds=10)
    print(result.rate, result.p99_ms, result.statuses)

`run_wrk` writes the show ids to a file, runs wrk with bench/lua/book_tickets.lua (1 ticket per
booking, a show picked at random from the ids: one id is a hot show) and parses the JSON line
that the script's done() hook prints: status counts summed over wrk's threads, wrk's error
counters and latency percentiles. Closed loop: every connection has one request in flight, like
pgbench's clients. wrk has no warm-up: run it twice and keep the second result.

Latencies cover every answered request whatever its status; wrk counts an answer slower than
`timeout` as a timeout error and leaves it out of the latencies, hence the long default.
Requests still in flight when the run ends are neither counted nor awaited (they may still be
booked): a bench that holds bookings against 201 answers must allow up to `connections` more.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "lua" / "book_tickets.lua"
MARKER = "WRK_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    connections: int
    threads: int
    seconds: float  # measured by wrk: from the first request to the end of the run
    requests: int  # answered requests, any status
    rate: float  # answered requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[int, int]  # answers by HTTP status
    errors: dict[str, int]  # wrk's socket errors: connect, read, write, timeout

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(status, 0) for status in statuses)

    @property
    def failures(self) -> int:
        """Requests without an HTTP answer: connect, read and write errors and timeouts."""
        return sum(self.errors.values())

    def describe_statuses(self) -> str:
        """`201: 12,345, 503: 7` plus any socket errors: what a report shows."""
        parts = [f"{status}: {n:,}" for status, n in sorted(self.statuses.items())]
        parts += [f"{kind} errors: {n:,}" for kind, n in sorted(self.errors.items()) if n]
        return ", ".join(parts) or "none"


def run_wrk(
    base_url: str,
    shows: Sequence[uuid.UUID | str],
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    timeout: float = 30.0,
    customer_email: str = "fan@example.com",
    wrk: str = "wrk",
) -> WrkResult:
    """Book 1 ticket per request on `shows` (one show id: a hot show) from `connections`
    keep-alive connections for `seconds`, and return what wrk saw."""
    if not shows:
        raise ValueError("run_wrk needs at least one show id")
    executable = shutil.which(wrk)
    if executable is None:
        raise WrkError(f"{wrk} not found on PATH (Debian: apt-get install -y wrk)")
    threads = max(1, min(threads, connections))  # wrk refuses more threads than connections
    with tempfile.NamedTemporaryFile("w", prefix="wrk-shows-", suffix=".txt") as ids:
        ids.write("".join(f"{show}\n" for show in shows))
        ids.flush()
        command = wrk_command(
            executable, base_url, ids.name, connections, threads, seconds, timeout, customer_email
        )
        # wrk stops by itself after `seconds`; the margin covers a slow start with many sockets.
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + timeout + 60
        )
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout}")
    return parse_output(done.stdout, connections)


def wrk_command(
    wrk: str,
    base_url: str,
    shows_file: str,
    connections: int,
    threads: int,
    seconds: float,
    timeout: float,
    customer_email: str,
) -> list[str]:
    return [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout))}s",
        "--latency",
        f"--script={SCRIPT}",
        base_url,
        "--",
        shows_file,
        customer_email,
    ]


def parse_output(stdout: str, connections: int) -> WrkResult:
    """The WrkResult in the `WRK_JSON {...}` line that book_tickets.lua's done() prints."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise WrkError(f"no {MARKER.strip()} line in wrk's output:\n{stdout}")
    raw: dict[str, Any] = json.loads(line.removeprefix(MARKER))
    percentiles: dict[str, float] = raw["percentiles_us"]
    latency: dict[str, float | None] = raw["latency_us"]
    seconds = raw["duration_us"] / 1e6
    requests = int(raw["requests"])

    def ms(microseconds: float | None) -> float:
        return float("nan") if microseconds is None or not requests else microseconds / 1000

    return WrkResult(
        connections=connections,
        threads=int(raw["threads"]),
        seconds=seconds,
        requests=requests,
        rate=requests / seconds if seconds else 0.0,
        p50_ms=ms(percentiles["50"]),
        p90_ms=ms(percentiles["90"]),
        p99_ms=ms(percentiles["99"]),
        p999_ms=ms(percentiles["99.9"]),
        max_ms=ms(latency["max"]),
        mean_ms=ms(latency["mean"]),
        statuses={int(status): int(n) for status, n in raw["statuses"].items()},
        errors={kind: int(n) for kind, n in raw["errors"].items() if kind != "status"},
    )
