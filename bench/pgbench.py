"""pgbench baselines, run in the same bench run as the service they are held against.

The scripts are in <repo>/../shared/bench (see its README): one booking per transaction (counter
UPDATE + booking INSERT + outbox INSERT) on one hot show, or spread over 1,000 shows; 20 clients,
2 threads, in a database of the bench's own, schema.sql re-run before each run. p50/p99 come
from pgbench's per-transaction log (-l).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT.parent / "shared" / "bench"
ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
CLIENTS = 20
HOT = "one_per_tx_hot.sql"
SPREAD = "one_per_tx_spread.sql"
NAMES = {HOT: "pgbench one per tx, hot show", SPREAD: "pgbench one per tx, 1,000 shows"}


@dataclasses.dataclass(frozen=True)
class Baseline:
    name: str
    clients: int
    rate: float  # transactions per second
    p50_ms: float
    p99_ms: float
    transactions: int


def check_tools(scripts: Path) -> None:
    tools = ("pgbench", "psql", "createdb", "dropdb", "wrk")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        raise SystemExit(
            f"bench needs {', '.join(missing)} on PATH (PostgreSQL client tools;"
            " wrk: apt-get install -y wrk)"
        )
    if not (scripts / "schema.sql").exists():
        raise SystemExit(f"pgbench scripts not found in {scripts} (expected ../shared/bench)")


def pg_environment() -> dict[str, str]:
    url = make_url(ADMIN_URL)
    env = dict(os.environ, PGHOST=url.host or "127.0.0.1", PGPORT=str(url.port or 5432))
    env["PGUSER"] = url.username or "postgres"
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


def run(scripts: Path, db: str, script: str, seconds: float) -> Baseline:
    """One pgbench run of `script` (HOT or SPREAD) on fresh tables in database `db`."""
    env = pg_environment()
    schema = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", str(scripts / "schema.sql")]
    subprocess.run(schema, env=env, check=True, capture_output=True)
    print(f"  {NAMES[script]} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as logs:
        command = [
            *("pgbench", "-n", "-c", str(CLIENTS), "-j", "2", "-l", f"--log-prefix={logs}/tx"),
            *("-T", str(max(1, round(seconds))), "-f", str(scripts / script), db),
        ]
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        latencies = sorted(log_latencies(Path(logs)))
    summary = parse_summary(out)
    return Baseline(
        name=NAMES[script],
        clients=CLIENTS,
        rate=summary["tps"],
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        transactions=int(summary["number of transactions actually processed"]),
    )


def parse_summary(output: str) -> dict[str, float]:
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


def log_latencies(logs: Path) -> list[float]:
    """Per-transaction latencies (seconds) from pgbench's -l logs: the third field, in µs."""
    latencies = []
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            field = line.split()[2]
            if field.isdigit():  # failed transactions say "failed" or "serialization"
                latencies.append(int(field) / 1e6)
    return latencies


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def create_database(name: str) -> None:
    subprocess.run(["createdb", name], env=pg_environment(), check=True)


def drop_database(name: str) -> None:
    subprocess.run(["dropdb", "--force", name], env=pg_environment(), check=False)


def describe_machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal")))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    version = subprocess.run(
        ["psql", "-At", "-d", "postgres", "-c", "SHOW server_version"],
        env=pg_environment(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": models[0] if models else platform.processor(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "postgres": version,
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }
