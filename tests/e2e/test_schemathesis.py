"""schemathesis against the running API and the OpenAPI document it serves.

A real `python -m service api` (SHOWS_API_TOKEN set, so the token's 401 is checked too), and the
schemathesis CLI with a fixed seed and a bounded number of cases per operation, in all its
phases: examples, coverage (boundary and negative values: missing fields, wrong types, out of
range), fuzzing, and stateful (links: create a show, book it, read the booking). Checks: no 5xx,
every status, header, content type and body as the document says, negative data refused, 405
with Allow for undocumented methods, the token enforced. Not checked: "positive data accepted",
since the API is stricter than JSON Schema can say (2.0 is a JSON Schema integer, not ours;
a title of spaces has a length but no text; an e-mail must be deliverable).
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from service.api.routes import ROUTES
from service.settings import Settings
from tests.e2e.test_api_processes import free_port
from tests.support.processes import environment, start, wait_until_ready

TOKEN = "schemathesis-token-0123456789"
SEED = 20261130
CASES = 40  # per operation and phase: ~15 s here, ~2,500 requests
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    # Not use_after_free: DELETE /bookings/{id} cancels a booking, which stays readable with
    # status "canceled" (the contract), where that check wants a 404 after a DELETE.
    "ensure_resource_availability",
]


@pytest.mark.slow
async def test_schemathesis_finds_nothing(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = environment(
        settings,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        SHOWS_API_TOKEN=TOKEN,
        DB_POOL_SIZE="4",
        LOG_LEVEL="WARNING",
    )
    api = await start("api-schemathesis", ["service", "api"], env, tmp_path)
    try:
        await wait_until_ready(f"http://127.0.0.1:{port}/ready", api)
        status, report = await run_schemathesis(f"http://127.0.0.1:{port}/openapi.json", tmp_path)
    finally:
        await api.stop()
    assert status == 0, report
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated, report
    # Every case passed, and there were enough of them to mean something.
    assert generated[1] == generated[2] and int(generated[1]) >= 300, report
    # Every operation of the document was tested (schemathesis leaves out /openapi.json itself).
    operations = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert operations and len(set(operations.groups())) == 1, report
    assert int(operations[1]) == len(ROUTES) - 1, report
    # The server logged no error: a 4xx is the client's business, a 5xx would be a bug.
    assert " ERROR " not in api.output(), api.output()


async def run_schemathesis(url: str, workdir: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        url,
        f"--seed={SEED}",
        f"--max-examples={CASES}",
        f"--checks={','.join(CHECKS)}",
        f"--header=Authorization: Bearer {TOKEN}",
        "--generation-database=none",
        "--workers=1",
        "--request-timeout=20",
        "--no-color",
        cwd=workdir,  # whatever it writes stays out of the repository
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(240):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")
