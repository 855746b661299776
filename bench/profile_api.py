"""Where the API's CPU goes under wrk: py-spy samples it on a hot show, grouped by library.

    uv run --frozen python -m bench.profile_api [--connections 100] [--seconds 20] [--top 15]
    uv run --frozen python -m bench.profile_api --command 'python /tmp/launch.py uvloop'

py-spy is not a project dependency: give its command with --py-spy (default: `py-spy` on PATH,
else `uvx py-spy`; `pip install py-spy` into any throwaway venv will do). It needs ptrace
rights on the API process (root, or CAP_SYS_PTRACE).

A fresh database (`python -m service migrate`) and API process (as bench/service.py starts
it), one hot show, a 2 s wrk warm-up; then wrk loads the API while `py-spy record --format raw
--nonblocking` samples it (200 Hz, idle samples left out, so shares are of the API's busy time).
Non-blocking, because py-spy's default (stop the process for every sample) inflates whatever
sits in a system call on the 2-core VM measured: a loop of uuid4() (a getrandom() call each)
and pure Python, 59 % / 41 % by the clock, sampled as 94 % / 5 % blocking and 49 % / 44 %
(+ 7 % loop) non-blocking. Printed:
own time (the sampled leaf frame) and inclusive time (any frame on the stack) by group and by
function. C code called from Python (a syscall in socket.send, pydantic-core, asyncpg's
protocol) counts as the Python frame that called it. --raw keeps py-spy's collapsed stacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench import invariants, scenarios, service
from bench.wrk import WrkResult, run_wrk
from tests.support.database import new_database_url

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# A sampled frame's file, or its first path component -> the group it is reported under.
GROUPS = {
    "email_validator": "email-validator",
    "idna": "email-validator",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "sqlalchemy": "SQLAlchemy",
    "greenlet": "SQLAlchemy",
    "asyncpg": "asyncpg",
    "uuid.py": "uuid",
    "json": "json",
    "aiohttp": "aiohttp",
    "multidict": "aiohttp",
    "yarl": "aiohttp",
    "asyncio": "asyncio",
    "asyncio/selector_events.py": "asyncio sockets (send/recv syscalls)",
    "selectors.py": "asyncio sockets (send/recv syscalls)",
    "logging": "logging",
    "service": "service",
    "<string>": "generated code (dataclass __init__)",
}
# Frames (nearly) every sample has, the process's entry and the event loop's run loop: left out
# of inclusive time.
ENTRY_FRAMES = (
    "<module>",
    "_run_module_as_main",
    "_run_code",
    "main",
    "run_api",
    "_serve",
    "run_app",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop.run_forever",
    "BaseEventLoop._run_once",
    "Handle._run",
)


@dataclasses.dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def group(self) -> str:
        head = self.file.split("/", 1)[0]
        return GROUPS.get(self.file) or GROUPS.get(head) or "other: " + head.removesuffix(".py")

    @property
    def is_entry(self) -> bool:
        return self.function in ENTRY_FRAMES or self.file.startswith("<frozen runpy>")

    def __str__(self) -> str:
        return f"{self.function} ({self.file})"


@dataclasses.dataclass
class Profile:
    samples: int = 0
    own_by_group: Counter[str] = dataclasses.field(default_factory=Counter)
    total_by_group: Counter[str] = dataclasses.field(default_factory=Counter)
    own_by_function: Counter[Frame] = dataclasses.field(default_factory=Counter)
    total_by_function: Counter[Frame] = dataclasses.field(default_factory=Counter)


def parse_collapsed(lines: Iterable[str]) -> Profile:
    """py-spy's raw format: `frame;frame;...;leaf COUNT`, a frame being `function (file:line)`."""
    profile = Profile()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [as_frame(raw) for raw in stack.split(";")] if stack else [NO_FRAME]
        profile.samples += n
        profile.own_by_group[frames[-1].group] += n
        profile.own_by_function[frames[-1]] += n
        inner = [frame for frame in frames if not frame.is_entry]
        for group in {frame.group for frame in inner}:
            profile.total_by_group[group] += n
        for frame in set(inner):
            profile.total_by_function[frame] += n
    return profile


NO_FRAME = Frame("(no Python frame: native code, GC)", "?")


def as_frame(raw: str) -> Frame:
    match = FRAME.match(raw)
    return Frame(match["function"], match["file"]) if match else Frame(raw, "?")


def render(profile: Profile, top: int, load: WrkResult) -> str:
    total = max(profile.samples, 1)

    def table(title: str, counts: Iterable[tuple[object, int]]) -> list[str]:
        rows = [f"| {100 * n / total:.1f} % | {what} |" for what, n in counts]
        return ["", f"| {title} | |", "|--:|---|", *rows]

    return "\n".join(
        [
            f"{profile.samples:,} busy samples; load meanwhile: {load.rate:,.0f} req/s, "
            f"p99 {load.p99_ms:.1f} ms, {load.describe_statuses()}",
            *table("own, by group", profile.own_by_group.most_common()),
            *table("inclusive, by group", profile.total_by_group.most_common()),
            *table("own, by function", profile.own_by_function.most_common(top)),
            *table("inclusive, by function", profile.total_by_function.most_common(top)),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=20, help="sampled seconds")
    parser.add_argument("--top", type=int, default=15, help="functions per table")
    parser.add_argument("--py-spy", default=default_py_spy(), help="py-spy command")
    parser.add_argument(
        "--command",
        default="python -m service api",
        help="how to start the API ('python' is this interpreter)",
    )
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    command = scenarios.parse_variant(f"api={args.command}").command
    with tempfile.TemporaryDirectory() as scratch:
        raw = args.raw or Path(scratch) / "profile.txt"
        load = profile_api(command, shlex.split(args.py_spy), raw, args.connections, args.seconds)
        print(render(parse_collapsed(raw.read_text().splitlines()), args.top, load))
    return 0


def default_py_spy() -> str:
    return "py-spy" if shutil.which("py-spy") else "uvx py-spy"


def profile_api(
    command: list[str], py_spy: list[str], raw: Path, connections: int, seconds: int
) -> WrkResult:
    database_url = new_database_url("bench_profile")
    service.migrate(database_url)
    try:
        with service.api(command, service.environment(database_url)) as api:
            shows = service.create_shows(api.base_url, 1)
            run_wrk(api.base_url, shows, connections=connections, seconds=2)
            loads: list[WrkResult] = []
            # wrk runs a second longer on each side than py-spy samples.
            loader = threading.Thread(
                target=lambda: loads.append(
                    run_wrk(api.base_url, shows, connections=connections, seconds=seconds + 2)
                )
            )
            loader.start()
            record = [*py_spy, "record", "--nonblocking", "--pid", str(api.process.pid)]
            record += ["--rate", "200"]
            record += ["--duration", str(seconds), "--format", "raw", "--output", str(raw)]
            time.sleep(1)
            spy = subprocess.run(record, capture_output=True, text=True)
            loader.join()
            if spy.returncode != 0:
                print(spy.stderr, file=sys.stderr)
                raise SystemExit(f"py-spy failed ({spy.returncode}); it needs ptrace rights")
            return loads[0]
    finally:
        invariants.drop_database(database_url)


if __name__ == "__main__":
    sys.exit(main())
