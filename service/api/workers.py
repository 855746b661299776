"""Several API processes on one port (API_WORKERS), run and stopped as one.

Each worker binds the port with SO_REUSEPORT and the kernel spreads connections over them. Each
has its own pool and coalescer: the database, not a process, decides what is booked, so several
workers are as correct as one. The parent only supervises: SIGTERM/SIGINT stop every worker
(left alone, they would outlive it and keep the port), and one worker dying stops the others, so
a supervisor (compose, systemd) sees the API exit instead of running on at reduced capacity.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from service.common import metrics

log = logging.getLogger(__name__)

# How long a worker may take to finish its requests after SIGTERM before it is killed.
GRACE_SECONDS = 20.0


def run_workers(serve: Callable[[], None], count: int) -> int:
    """Run `serve` in `count` processes until one exits or we are told to stop; 0 if all
    workers exited cleanly."""
    # Spawned, not forked: each worker starts a fresh interpreter, which reads the environment
    # (the metrics directory) as it imports, and shares no event loop or sockets by accident.
    spawning = multiprocessing.get_context("spawn")
    workers = [spawning.Process(target=serve, name=f"api-{n}") for n in range(count)]
    for worker in workers:
        worker.start()
    stopping = _Stopping(workers)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping %d API workers", signal.Signals(signum).name, count)
        stopping.terminate()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    wait([worker.sentinel for worker in workers])
    stopping.terminate()
    for worker in workers:
        worker.join(GRACE_SECONDS)
        if worker.is_alive():
            log.warning("%s did not stop within %.0f s: killing it", worker.name, GRACE_SECONDS)
            worker.kill()
            worker.join()
        if worker.pid is not None:
            metrics.forget_process(worker.pid)
    return 0 if all(stopping.stopped_cleanly(worker) for worker in workers) else 1


class _Stopping:
    """SIGTERM each worker once: aiohttp finishes in-flight requests and exits, but a second
    SIGTERM in the middle of that shutdown breaks it off with an error."""

    def __init__(self, workers: Sequence[BaseProcess]) -> None:
        self._workers = workers
        self._signalled: set[int | None] = set()

    def stopped_cleanly(self, worker: BaseProcess) -> bool:
        """Exited 0; or ended by our own SIGTERM before it could handle it (still starting)."""
        signalled = worker.pid in self._signalled
        return worker.exitcode == 0 or (signalled and worker.exitcode == -signal.SIGTERM)

    def terminate(self) -> None:
        for worker in self._workers:
            if worker.is_alive() and worker.pid not in self._signalled:
                self._signalled.add(worker.pid)
                worker.terminate()
