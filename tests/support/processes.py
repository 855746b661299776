"""The service's real processes (`python -m service ...`, `python -m consumers ...`) for tests
that kill, restart or run several of them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that gives a child process the same settings as `settings`."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url.get_secret_value(),
        AMQP_URL=settings.amqp_url.get_secret_value(),
        EVENTS_EXCHANGE=settings.events_exchange,
        RELAY_HTTP_PORT=str(settings.relay_http_port),
        CONSUMERS_HTTP_PORT=str(settings.consumers_http_port),
        # The queues a child declares are named by these: with the test's own, the test's
        # clean-up finds them all (a child on the defaults left retry queues behind).
        CONSUMER_RETRY_DELAYS_MS=",".join(map(str, settings.consumer_retry_delays_ms)),
        CONSUMER_MAX_ATTEMPTS=str(settings.consumer_max_attempts),
        CONSUMER_DELIVERY_LIMIT=str(settings.consumer_delivery_limit),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log: Path

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()

    async def stop(self, within: float = 15.0) -> int:
        """SIGTERM and wait for a graceful exit (SIGKILL if it does not come)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            await self.kill()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start `python -m <args>` with its output in `log_dir/<name>.log`."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *args, cwd=ROOT, env=env, stdout=out, stderr=out
        )
    return Child(name, process, log)


async def wait_until_ready(url: str, child: Child, within: float = 60.0) -> None:
    """Poll `url` until it answers 200; fail early with the child's log if it died."""
    async with asyncio.timeout(within), aiohttp.ClientSession() as session:
        while True:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited early:\n{child.output()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
