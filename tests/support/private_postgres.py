"""A throwaway PostgreSQL cluster of one test's own, to restart, stop and start at will.

The shared PostgreSQL on 5432 serves every test run on this machine and must never be
restarted; a test that needs a server restart (57P01 admin shutdown, 57P03 starting up,
refused connections) starts its own: initdb into a temporary directory, a free port on
127.0.0.1, trust authentication, durability off (fsync, full_page_writes) since nothing in it
outlives the test. `initdb` and `postgres` refuse to run as root, so as root they run as the
`postgres` OS user (`runuser`). The cluster is stopped and its directory removed when the
block ends, whatever happened in it; and should the test process itself die (SIGKILL, a CI
timeout), a watchdog process that waits on a pipe from it does the same.

    async with private_postgres(max_connections=20) as pg:
        conn = await asyncpg.connect(pg.dsn)
        await pg.restart()            # pg_ctl restart -m fast
        await pg.stop("immediate")    # a crash: recovery at the next start
        await pg.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"  # who runs the server when the tests run as root
StopMode = Literal["smart", "fast", "immediate"]

# Fast and small: a test's cluster holds little and need not survive a power cut.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "shared_buffers": "'16MB'",
    "max_wal_size": "'64MB'",
    "max_connections": "20",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"  # SQLAlchemy

    async def init(self, settings: dict[str, str]) -> None:
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8", "--locale", "C")  # fmt: skip
        lines = [f"{name} = {value}" for name, value in (SETTINGS | settings).items()]
        config = self.data / "postgresql.conf"
        with config.open("a") as conf:
            conf.write("\n".join([f"port = {self.port}", *lines, ""]))

    async def start(self, wait: bool = True) -> None:
        """Start the server; with `wait`, return once it accepts connections."""
        await self._pg_ctl("start", "-l", str(self.log), *(["-w"] if wait else ["-W"]))

    async def stop(self, mode: StopMode = "fast") -> None:
        await self._pg_ctl("stop", "-m", mode, "-w")

    async def restart(self, mode: StopMode = "fast") -> None:
        """pg_ctl restart: sessions end (57P01 with mode fast), new connections are refused or
        told 57P03 while it starts; returns once it accepts connections again."""
        await self._pg_ctl("restart", "-m", mode, "-w", "-l", str(self.log))

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def _pg_ctl(self, *args: str) -> None:
        await self._run("pg_ctl", "-D", str(self.data), "-t", "60", *args)

    async def _run(self, program: str, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *_as_server_user(), str(BINDIR / program), *args,
            cwd=self.directory,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed: {output.decode()}")

    def destroy(self) -> None:
        """Stop at once (no clean shutdown needed) and remove everything; safe to repeat."""
        destroy(self.directory)


def destroy(directory: Path) -> None:
    data = directory / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [*_as_server_user(), str(BINDIR / "pg_ctl"), "-D", str(data),
             "stop", "-m", "immediate", "-w", "-t", "30"],
            cwd=directory, capture_output=True, check=False,
        )  # fmt: skip
    shutil.rmtree(directory, ignore_errors=True)


def _watchdog(directory: Path) -> subprocess.Popen[bytes]:
    """A process that destroys the cluster once its stdin closes, which happens when this
    process ends, however it ends. Its own session: a Ctrl-C to the tests does not reach it."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; sys.stdin.read(); "
         "from tests.support.private_postgres import destroy; destroy(Path(sys.argv[1]))",
         str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2], start_new_session=True,
    )  # fmt: skip


def _as_server_user() -> list[str]:
    return ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []


def _make_directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="tickets-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(OS_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)
    return directory


@contextlib.asynccontextmanager
async def private_postgres(**settings: str | int) -> AsyncIterator[PrivatePostgres]:
    """A started private cluster; keyword arguments are postgresql.conf settings (strings are
    written as given, so quote string values: application_name="'x'")."""
    server = PrivatePostgres(_make_directory(), free_port())
    watchdog = _watchdog(server.directory)
    try:
        await server.init({name: str(value) for name, value in settings.items()})
        await server.start()
        yield server
    finally:
        await asyncio.to_thread(server.destroy)
        if watchdog.stdin is not None:
            watchdog.stdin.close()  # nothing left for it to do
        await asyncio.to_thread(watchdog.wait)
