"""The PostgreSQL protocol reader of the fault proxy, on byte streams recorded through it.

pg_streams/ holds what asyncpg 0.32 and SQLAlchemy 2.1's asyncpg dialect sent to PostgreSQL 15
(`*_client.bin`) and what came back (`*_server.bin`):
- asyncpg: SSLRequest, startup, a transaction (`conn.transaction()`: simple-Query BEGIN and
  COMMIT, an INSERT with an argument through Parse/Bind/Execute), then a second transaction
  committed by `conn.fetch("COMMIT")`, which sends the COMMIT through the extended protocol;
- SQLAlchemy: its first-connect queries, `engine.begin()`, one SELECT with a parameter, COMMIT.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import pgwire

STREAMS = Path(__file__).parent / "pg_streams"


def recorded(name: str) -> bytes:
    return (STREAMS / name).read_bytes()


def conversation(data: bytes, chunk: int | None = None) -> list[tuple[str, str | None, bool]]:
    """(kind, SQL, commits?) of every message, the stream fed in chunks of `chunk` bytes."""
    client = pgwire.ClientConversation()
    step = chunk or len(data)
    messages = [m for i in range(0, len(data), step) for m in client.feed(data[i : i + step])]
    return [(m.kind, client.sql(m), client.commits(m)) for m in messages]


def test_asyncpg_session_statements_and_commits() -> None:
    seen = conversation(recorded("asyncpg_client.bin"))
    assert [kind for kind, _, _ in seen[:3]] == [pgwire.SSL, pgwire.STARTUP, "Q"]
    assert [sql for _, sql, _ in seen if sql] == [
        "BEGIN;",
        "CREATE TEMP TABLE t (id int)",
        "INSERT INTO t VALUES ($1)",
        "COMMIT;",
        "BEGIN",
        "INSERT INTO t VALUES (8) RETURNING id",
        "COMMIT",
    ]
    commits = [(kind, sql) for kind, sql, commits in seen if commits]
    # conn.transaction() commits with a simple Query; fetch("COMMIT") at the Execute of its
    # portal (the Parse only prepares it).
    assert commits == [("Q", "COMMIT;"), ("E", None)]
    assert seen[-1][0] == "X"  # Terminate


def test_sqlalchemy_asyncpg_dialect_commits_with_a_simple_query() -> None:
    seen = conversation(recorded("sqlalchemy_client.bin"))
    assert [(kind, sql) for kind, sql, commits in seen if commits] == [("Q", "COMMIT;")]
    # Statements go through Parse (prepared), transaction control through Query.
    assert ("Q", "ROLLBACK;", False) in seen
    assert ("P", "SELECT CAST($1 AS int) AS x", False) in seen


@pytest.mark.parametrize("name", ["asyncpg_client.bin", "sqlalchemy_client.bin"])
def test_any_chunking_gives_the_same_messages(name: str) -> None:
    data = recorded(name)
    whole = conversation(data)
    for chunk in (1, 2, 3, 7, 64):
        assert conversation(data, chunk) == whole


def test_startup_parameters() -> None:
    framer = pgwire.Framer(startup=True)
    startup = [m for m in framer.feed(recorded("asyncpg_client.bin")) if m.kind == pgwire.STARTUP]
    assert pgwire.startup_parameters(startup[0]) == {
        "client_encoding": "'utf-8'",
        "user": "postgres",
        "database": "postgres",
        "application_name": "recorded",
    }


@pytest.mark.parametrize("name", ["asyncpg_server.bin", "sqlalchemy_server.bin"])
def test_server_stream_backend_pid_and_command_tags(name: str) -> None:
    answers = [pgwire.read_answer(m) for m in pgwire.Framer(startup=False).feed(recorded(name))]
    assert [a.backend_pid for a in answers if a.backend_pid] != []
    tags = [a.tag for a in answers if a.tag]
    assert tags.count("COMMIT") == (2 if name.startswith("asyncpg") else 1)
    assert all(a.ends_command for a in answers if a.tag)


def test_error_response_carries_its_sqlstate() -> None:
    body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0"
    message = b"E" + (len(body) + 4).to_bytes(4, "big") + body
    (parsed,) = pgwire.Framer(startup=False).feed(message)
    assert pgwire.read_answer(parsed) == pgwire.Answer(ends_command=True, sqlstate="57P01")


def test_tls_or_garbage_is_not_taken_for_the_protocol() -> None:
    client_hello = bytes.fromhex("160301020001000200")
    with pytest.raises(pgwire.ProtocolError):
        pgwire.Framer(startup=True).feed(client_hello)
    with pytest.raises(pgwire.ProtocolError):
        pgwire.Framer(startup=False).feed(b"Q\0\0\0\1")


@pytest.mark.parametrize(
    ("sql", "commits"),
    [
        ("COMMIT", True),
        ("commit;", True),
        ("  END ; ", True),
        ("COMMIT WORK", True),
        ("commit transaction and no chain", True),
        ("/* tag */ COMMIT -- done", True),
        ("INSERT INTO t VALUES (1); COMMIT", True),
        ("ROLLBACK", False),
        ("SELECT 'COMMIT'", False),
        ("COMMITTED", False),
        ("PREPARE TRANSACTION 'x'", False),
        ("COMMIT PREPARED 'x'", False),  # two-phase commit: not followed
    ],
)
def test_is_commit(sql: str, commits: bool) -> None:
    assert pgwire.is_commit(sql) is commits
