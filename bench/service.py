"""The service's processes as the bench runs them: `python -m service api`, `python -m service
relay`, `python -m consumers run all`, each a child process with the deployed defaults (metrics
on, tracing configured as the environment says), LOG_LEVEL=WARNING, ports picked free."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
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
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
# Enough tickets that no run sells a show out: a refusal skips the writes, so a sold-out show
# would flatter the rate.
TICKETS_PER_SHOW = 100_000_000
API = [sys.executable, "-m", "service", "api"]
RELAY = [sys.executable, "-m", "service", "relay"]
CONSUMERS = [sys.executable, "-m", "consumers", "run", "all"]


class Child:
    """One service process; `base_url` is where its /ready and /metrics are."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = log

    def until_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready within {within} s: {self.tail()}")

    def rss_mb(self) -> tuple[float, float]:
        """(VmHWM, VmRSS) of the process, in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmHWM", "VmRSS")))
        return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (all its threads)."""
        return cpu_seconds_of(self.process.pid)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as response:
            return str(response.read().decode())

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


def environment(database_url: str, **extra: str) -> dict[str, str]:
    """The children's environment: the bench's database, free ports, quiet logs; `extra` on top
    (EVENTS_EXCHANGE, OTEL_EXPORTER_OTLP_ENDPOINT)."""
    env = dict(os.environ, DATABASE_URL=database_url, HTTP_HOST="127.0.0.1", LOG_LEVEL="WARNING")
    env.update(HTTP_PORT=str(free_port()), RELAY_HTTP_PORT=str(free_port()))
    env.update(CONSUMERS_HTTP_PORT=str(free_port()))
    env.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    return env | extra


@contextmanager
def child(command: list[str], env: dict[str, str], port_variable: str) -> Iterator[Child]:
    """`command` running until the block ends (SIGTERM), ready on env[port_variable]."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        running = Child(process, int(env[port_variable]), log)
        try:
            running.until_ready()
            yield running
        finally:
            running.stop()


@contextmanager
def api(command: list[str], env: dict[str, str]) -> Iterator[Child]:
    with child(command, env, "HTTP_PORT") as process:
        yield process


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (all its threads); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """Every process whose command name is `name` (PostgreSQL's backends, RabbitMQ's beam.smp)."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                pids.append(int(comm.parent.name))
        except OSError:  # gone meanwhile
            continue
    return pids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_shows(base_url: str, count: int) -> list[str]:
    """`count` shows made through the API itself (POST /shows), on one keep-alive connection."""
    connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=10)
    try:
        return [new_show(connection) for _ in range(count)]
    finally:
        connection.close()


def new_show(connection: http.client.HTTPConnection) -> str:
    body = {
        "dead_nation_id": str(uuid.uuid4()),
        "number_of_tickets": TICKETS_PER_SHOW,
        "start_time": "2026-12-31T20:00:00+00:00",
        "title": "Bench",
        "venue": "Hall",
    }
    connection.request("POST", "/shows", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 201:
        raise RuntimeError(f"POST /shows answered {response.status}: {answer!r}")
    return str(json.loads(answer)["show_id"])


def migrate(database_url: str) -> None:
    """`python -m service migrate`: creates the database and runs the migrations."""
    env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-m", "service", "migrate"], cwd=ROOT, env=env, check=True)
