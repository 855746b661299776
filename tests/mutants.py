"""make mutants: break each guarantee on purpose and check that a test notices.

Each mutant is one small edit to the code that holds a guarantee (the edit a careless change
could make), with the tests that should fail because of it. For each: copy the repository to a
temporary directory, apply the edit there, run those tests; the mutant is killed when they fail,
survives when they pass. The run fails if any survives, if an edit no longer applies (the code
moved: update the list), or if the unmutated copy does not pass the same tests.

    uv run --frozen python -m tests.mutants [NAME ...]

Slow (a few minutes): not part of `make test`. docs/TESTING.md keeps the last result and the
list of guarantee -> test that proves it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    guarantee: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "traceparent-read-looser-than-w3c",
        "a request or a message continues its caller's trace as the W3C propagator reads it",
        "service/common/tracing.py",
        ' or (version == "00" and rest)',
        "",
        ("tests/unit/test_tracing.py",),
    ),
    Mutant(
        "outbox-payload-time-not-iso",
        "the outbox payload is the event contract's body, character for character",
        "service/domain.py",
        '"published_at": self.published_at,',
        '"published_at": str(self.published_at),',
        ("tests/unit/test_domain.py",),
    ),
    Mutant(
        "outbox-payload-refuses-asyncpg-uuids",
        "a cancellation's event, whose ids come from its booking's row, is written",
        "service/common/encoding.py",
        "        return str(value)\n",
        "        raise TypeError(value)\n",
        ("tests/unit/test_domain.py", "tests/integration/test_cancellation.py"),
    ),
    Mutant(
        "relay-publish-timeout-ignored",
        "a hung broker (no confirms, nothing closed) is left by the relay's publish timeout",
        "service/relay/publisher.py",
        "await asyncio.wait(publishing, timeout=self._publish_timeout)",
        "await asyncio.wait(publishing)",
        ("tests/integration/test_relay.py::test_publish_that_hangs_times_out_and_recovers",),
    ),
    Mutant(
        "purge-ignores-retention",
        "published outbox rows are kept for OUTBOX_RETENTION",
        "service/relay/purge.py",
        "kept.purge(conn, kept.seconds, PURGE_BATCH)",
        "kept.purge(conn, 0, PURGE_BATCH)",
        ("tests/integration/test_relay.py",),
    ),
    Mutant(
        "purge-stops-after-one-batch",
        "a purge round goes on batch after batch",
        "service/relay/purge.py",
        "            if purged < PURGE_BATCH:\n                break",
        "            break",
        ("tests/integration/test_relay.py",),
    ),
    Mutant(
        "provider-without-inbox",
        "ticket_provider does not call the provider again for a message it applied",
        "consumers/ticket_provider.py",
        "            if await was_applied(conn, NAME, message_id):\n                return False",
        "            if False:\n                return False",
        ("tests/integration/test_consumers_ticket_provider.py",),
    ),
    Mutant(
        "cancel-keeps-the-seats",
        "a cancellation gives its tickets back to the show (the model test)",
        "service/domain.py",
        "tickets[show_id] = tickets.get(show_id, 0) - done.booking.number_of_tickets",
        "tickets[show_id] = tickets.get(show_id, 0) - 0",
        ("tests/integration/test_model.py",),
    ),
    Mutant(
        "read-committed",
        "a show's outbox ids follow its commit order (SERIALIZABLE)",
        "service/db/engine.py",
        'isolation_level="SERIALIZABLE"',
        'isolation_level="READ COMMITTED"',
        ("tests/integration/test_outbox_order.py",),
    ),
    Mutant(
        "outbox-in-its-own-statement",
        "the outbox row is written with its booking, in one statement",
        "service/db/booking.py",
        "        written = (await session.execute(BOOK, parameters)).one()",
        "        written = (await session.execute(BOOK, parameters)).one()\n"
        "        await session.execute(text('DELETE FROM outbox WHERE event_id = ANY(CAST(:e"
        " AS uuid[]))'), {'e': parameters['event_ids']})",
        ("tests/unit/test_booking_statement.py", "tests/integration/test_api_contract.py"),
    ),
    Mutant(
        "no-capacity-check",
        "never more tickets than a show has (the capacity rule)",
        "service/domain.py",
        "        elif request.number_of_tickets <= self.available:",
        "        elif True:",
        ("tests/unit/test_domain.py", "tests/integration/test_booking_races.py"),
    ),
    Mutant(
        "retries-exhausted-is-a-500",
        "exhausted serialization retries answer 503 + Retry-After",
        "service/api/errors.py",
        "    except RetriesExhausted as error:",
        "    except ZeroDivisionError as error:",
        ("tests/integration/test_busy_answers.py",),
    ),
    Mutant(
        "pool-timeout-is-a-500",
        "no pooled connection in time answers 503 + Retry-After",
        "service/common/outages.py",
        "at checkout.\n    if isinstance(error, sqlalchemy.exc.TimeoutError",
        "at checkout.\n    if isinstance(error, KeyboardInterrupt",
        ("tests/integration/test_busy_answers.py",),
    ),
    Mutant(
        "show-sales-without-inbox",
        "show_sales applies a redelivered event once (inbox), alone or in a batch",
        "consumers/show_sales.py",
        "        if message_id not in claimed or message_id in counted:",
        "        if message_id in counted:",
        (
            "tests/integration/test_consumers_show_sales.py",
            "tests/integration/test_consumers_batches.py",
        ),
    ),
    Mutant(
        "batch-acked-before-commit",
        "a batch's messages are acked only after its commit: a crash before it loses none",
        "consumers/batch.py",
        "        try:\n            applied = await self._consumer.handle_batch(",
        "        for waiting, (message_id, event) in readable:\n"
        "            await waiting.delivery.acked(True, message_id, event)\n"
        "        try:\n            applied = await self._consumer.handle_batch(",
        (
            "tests/integration/test_consumers_batches.py"
            "::test_a_consumer_killed_inside_a_batch_transaction_loses_and_doubles_nothing",
        ),
    ),
    Mutant(
        "batch-acked-over-unsettled-deliveries",
        "one ack frame settles a batch only when no delivery below it is still being handled",
        "consumers/acks.py",
        "        return len(tags) + settled_before_last == last - self._floor + 1",
        "        return True",
        (
            "tests/unit/test_acks.py",
            "tests/integration/test_consumers_batches.py"
            "::test_one_ack_frame_settles_a_batch_only_when_nothing_below_it_is_being_handled",
        ),
    ),
    Mutant(
        "failed-batch-fails-every-message",
        "a message that fails its batch is retried alone; the others are applied",
        "consumers/batch.py",
        "            for waiting, _ in readable:\n                await _alone(waiting)",
        "            for waiting, _ in readable:\n"
        "                waiting.done.set_exception(error)",
        ("tests/integration/test_consumers_batches.py",),
    ),
    Mutant(
        "api-workers-ignored",
        "API_WORKERS runs that many processes",
        "service/__main__.py",
        "    if settings.api_workers == 1:",
        "    if True:",
        ("tests/e2e/test_probes.py",),
    ),
    Mutant(
        "relay-never-gives-up-the-lead",
        "a standby takes over from a crashed leader",
        "service/relay/leader.py",
        "            if await guarded(postgresql_on(conn), try_lead(conn)):",
        "            if self._stopping.is_set():",
        ("tests/e2e/test_relay_takeover.py",),
    ),
    Mutant(
        "driver-message-in-the-log",
        "no customer e-mail in a log when a booking transaction fails",
        "service/db/booking.py",
        "        raise booking_failed(requests, error) from None",
        "        raise",
        ("tests/e2e/test_no_secrets_in_logs.py",),
    ),
    Mutant(
        "body-read-unbounded",
        "a body that does not arrive within HTTP_BODY_TIMEOUT gets 408",
        "service/api/bodies.py",
        "        async with asyncio.timeout(within):",
        "        async with asyncio.timeout(None):",
        ("tests/integration/test_slow_clients.py",),
    ),
    Mutant(
        "show-squatting",
        "the same dead_nation_id with other details is 409",
        "service/db/shows.py",
        "    if not _same_details(existing, show):",
        "    if False:",
        ("tests/integration/test_shows_protection.py",),
    ),
    Mutant(
        "token-not-checked",
        "POST /shows needs the bearer token when one is set",
        "service/api/auth.py",
        '        if scheme.lower() != "bearer" or not matches:',
        "        if False:",
        ("tests/integration/test_shows_protection.py",),
    ),
    Mutant(
        "queue-unbounded",
        "past BOOKING_MAX_QUEUED waiting requests, 503 at once",
        "service/coalescer.py",
        "        if self._queued >= self._max_queued:",
        "        if False:",
        ("tests/unit/test_coalescer.py", "tests/integration/test_coalescing.py"),
    ),
    Mutant(
        "key-answer-overwritten",
        "a repeat with an Idempotency-Key gets the stored answer and books nothing",
        "service/db/booking.py",
        "        WHERE stored.created_at < :expired_before",
        "        WHERE true",
        ("tests/integration/test_idempotency.py",),
    ),
    Mutant(
        "cancel-gives-back-twice",
        "a second cancellation changes nothing",
        "service/domain.py",
        "        elif booking.is_canceled:",
        "        elif False:",
        ("tests/unit/test_domain.py", "tests/integration/test_cancellation.py"),
    ),
    Mutant(
        "provider-ticket-kept-after-cancel",
        "a booking canceled while its ticket is made leaves no ticket at the provider",
        "consumers/ticket_provider.py",
        "            if (await self._booking(event)).status == CANCELED:",
        "            if False:",
        ("tests/integration/test_consumers_ticket_provider.py",),
    ),
    Mutant(
        "nul-stored",
        "no input gets a 5xx (a NUL in a name reaches PostgreSQL)",
        "service/api/schemas.py",
        "    if _CONTROL_CHARACTER.search(value):",
        "    if False:",
        ("tests/integration/test_hostile_input.py",),
    ),
    # Issue 14: database and broker faults.
    Mutant(
        "lost-commit-not-looked-up",
        "a COMMIT whose answer is lost is looked up: 201 for the booking it made",
        "service/db/lost_commit.py",
        "            found = await self._look_up(pending, deadline)",
        "            raise failure",
        ("tests/integration/test_lost_commit.py",),
    ),
    Mutant(
        "lost-commit-booked-again",
        "a booking that may exist is never made again (or denied)",
        "service/db/lost_commit.py",
        "and r.booking_id in found]",
        "and False]",
        ("tests/integration/test_lost_commit.py",),
    ),
    Mutant(
        "broken-connection-answered-503",
        "a connection lost before its COMMIT: the batch runs again on a fresh one",
        "service/db/lost_commit.py",
        "            if deadline - loop.time() < SHORTEST_ATTEMPT:",
        "            if True:",
        ("tests/integration/test_lost_commit.py",),
    ),
    Mutant(
        "invalidated-connection-is-a-bug",
        "a connection that died under SQLAlchemy is an outage, whatever it wraps",
        "service/common/outages.py",
        "    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:",
        "    if False:",
        ("tests/unit/test_outages.py", "tests/integration/test_postgres_restart.py"),
    ),
    Mutant(
        "starting-up-is-a-bug",
        "57P03 (starting up, shutting down) is an outage though the connection stays valid",
        "service/common/outages.py",
        '        "57P03",  # cannot_connect_now: starting up, shutting down, or a standby\n',
        "",
        ("tests/unit/test_outages.py",),
    ),
    Mutant(
        "row-locks-held-by-vanished-clients",
        "a session that vanished mid-transaction frees its rows (no show held hostage)",
        "service/db/bounds.py",
        '            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction),\n',
        "",
        ("tests/e2e/test_dead_path.py",),
    ),
    Mutant(
        "relay-keeps-the-lead-on-a-dead-path",
        "a relay leader on a dead path loses the lead within 15 s to a standby",
        "service/db/bounds.py",
        '            settings["idle_session_timeout"] = _ms(self.idle_session)',
        "            pass",
        ("tests/e2e/test_dead_path.py",),
    ),
    Mutant(
        "statements-unbounded",
        "every statement is bounded: the old leader steps down before a standby leads",
        "service/db/bounds.py",
        '            "command_timeout": self.command,',
        '            "command_timeout": None,',
        ("tests/e2e/test_dead_path.py",),
    ),
    Mutant(
        "ready-unbounded",
        "/ready answers 503 within 5 s of the database becoming unreachable, half-open too",
        "service/api/readiness.py",
        "            await asyncio.wait_for(asyncio.shield(self._check), self._within)",
        "            await self._check",
        ("tests/e2e/test_dead_path.py",),
    ),
    Mutant(
        "answer-waits-for-the-batch",
        "a booking request is answered within BOOKING_MAX_WAIT + 5 s",
        "service/coalescer.py",
        "call_later(self.grace, self.give_up)",
        "call_later(3600, self.give_up)",
        ("tests/unit/test_coalescer.py",),
    ),
    Mutant(
        "no-delivery-limit",
        "a message that crashes the consumer ends in the dead-letter queue",
        "consumers/topology.py",
        '"x-delivery-limit": self.delivery_limit}',
        '"x-queue-type": "quorum"}',
        ("tests/integration/test_consumers_delivery_limit.py",),
    ),
    Mutant(
        "crash-charges-the-neighbours",
        "a crash charges only the message that caused it: the others flow",
        "consumers/isolation.py",
        "        await self._subscribe(1)",
        "        await self._subscribe(self._prefetch)",
        ("tests/integration/test_consumers_delivery_limit.py",),
    ),
    Mutant(
        "careful-for-ever",
        "after a careful start, messages are handled side by side again (CONSUMER_PREFETCH)",
        "consumers/isolation.py",
        "        if self.careful and not delivered_before(headers):",
        "        if False:",
        ("tests/integration/test_consumers_ticket_provider.py",),
    ),
    Mutant(
        "outage-charges-a-delivery",
        "an outage spends no attempt (nor a delivery of the delivery limit)",
        "consumers/batch.py",
        "            await _put_back([waiting for waiting, _ in readable], error)",
        "            for waiting, _ in readable:\n"
        "                waiting.done.set_exception(error)",
        ("tests/integration/test_consumers_show_sales.py",),
    ),
    Mutant(
        "unexpected-error-holds-its-slot",
        "a delivery that fails unexpectedly does not keep its message unacked",
        "consumers/runner.py",
        "            await _reject(delivery, lost)",
        "            pass",
        ("tests/integration/test_consumers_delivery_limit.py",),
    ),
    Mutant(
        "missing-database-is-a-traceback",
        "a dependency missing at start is one line naming it, its address, what to do",
        "service/__main__.py",
        "        line = dependencies_of(settings).explain(error)",
        "        line = None",
        ("tests/e2e/test_missing_dependencies.py",),
    ),
    Mutant(
        "queues-shared-across-deployments",
        "consumer queue names start with EVENTS_EXCHANGE: deployments never share one",
        "consumers/topology.py",
        '        name = f"{events_exchange}.{consumer}"',
        "        name = consumer",
        ("tests/unit/test_consumers_logic.py",),
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants")
    parser.add_argument("names", nargs="*", help="only these mutants (default: all)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    with tempfile.TemporaryDirectory(prefix="tickets-mutants-") as scratch:
        copy = Path(scratch) / "repo"
        _copy_repository(copy)
        results = [_run(mutant, copy) for mutant in chosen]
    print("\n| mutant | guarantee | tests | result |\n|---|---|---|---|")
    for mutant, (result, seconds) in zip(chosen, results, strict=True):
        tests = ", ".join(f"`{t}`" for t in mutant.tests)
        print(f"| `{mutant.name}` | {mutant.guarantee} | {tests} | {result} ({seconds:.0f} s) |")
    bad = [m.name for m, (result, _) in zip(chosen, results, strict=True) if result != "killed"]
    if bad:
        print(f"\nNOT KILLED: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"\nall {len(chosen)} mutants killed")
    return 0


def _copy_repository(to: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in tracked:
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def _run(mutant: Mutant, copy: Path) -> tuple[str, float]:
    started = time.monotonic()
    target = copy / mutant.path
    original = target.read_text()
    if original.count(mutant.old) != 1:
        return "STALE: the code to mutate is not there exactly once", 0.0
    if not _tests_pass(copy, mutant.tests):
        return "BROKEN: the tests fail without the mutation", time.monotonic() - started
    target.write_text(original.replace(mutant.old, mutant.new))
    try:
        survived = _tests_pass(copy, mutant.tests)
    finally:
        target.write_text(original)
    print(f"{mutant.name}: {'SURVIVED' if survived else 'killed'}", flush=True)
    return ("SURVIVED" if survived else "killed"), time.monotonic() - started


def _tests_pass(copy: Path, tests: tuple[str, ...]) -> bool:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    return run.returncode == 0


if __name__ == "__main__":
    sys.exit(main())
