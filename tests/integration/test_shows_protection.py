"""Creating shows: SHOWS_API_TOKEN guards POST /shows, and a dead_nation_id cannot be squatted
(the same id with other details is 409; with the same details, the same show)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.settings import Settings
from tests.support.api import Client, book, create_show, show_body

TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings.replaced(shows_api_token=TOKEN)))) as c:
        yield c


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token-0123456789",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer t\u00f6ken-with-a-non-ascii-character",  # compare_digest refuses non-ASCII str
    ],
)
async def test_post_shows_without_the_token_is_401(
    guarded: Client, db: asyncpg.Connection, authorization: str | None
) -> None:
    body = show_body(5)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await guarded.post("/shows", json=body, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in (await response.json())["error"]
    found = await db.fetchval(
        "SELECT count(*) FROM shows WHERE dead_nation_id = $1::text::uuid", body["dead_nation_id"]
    )
    assert found == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
async def test_post_shows_with_the_token_works_and_reads_need_none(
    guarded: Client, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} {TOKEN}"}
    created = await guarded.post("/shows", json=show_body(5), headers=headers)
    assert created.status == 201
    show_id = (await created.json())["show_id"]
    assert (await guarded.get(f"/shows/{show_id}")).status == 200
    assert (await book(guarded, show_id, 1))[0] == 201  # booking needs no token


async def test_the_token_is_checked_before_the_body_is_read(guarded: Client) -> None:
    response = await guarded.post("/shows", data=b"{not json")
    assert response.status == 401


@pytest.mark.parametrize(
    "change",
    [
        {"number_of_tickets": 0},
        {"number_of_tickets": 11},
        {"title": "Another Show"},
        {"venue": "Small Hall"},
        {"start_time": "2026-12-31T20:00:00+00:00"},  # 20:00 UTC, not 20:00 at +01:00
    ],
)
async def test_same_dead_nation_id_with_other_details_is_409(
    client: Client, db: asyncpg.Connection, change: dict[str, object]
) -> None:
    body = show_body(10)
    first = await client.post("/shows", json=body)
    assert first.status == 201
    squat = await client.post("/shows", json=body | change)
    assert squat.status == 409
    assert "dead_nation_id" in (await squat.json())["error"]
    show = await (await client.get(f"/shows/{(await first.json())['show_id']}")).json()
    assert (show["number_of_tickets"], show["title"]) == (10, body["title"])  # first one stands


async def test_same_details_written_otherwise_are_the_same_show(client: Client) -> None:
    body = show_body(10)
    first = await client.post("/shows", json=body)
    # The same instant at another offset, and the same names with spaces around them.
    again = body | {"start_time": "2026-12-31T19:00:00Z", "title": f"  {body['title']} "}
    second = await client.post("/shows", json=again)
    assert (first.status, second.status) == (201, 200)
    assert (await first.json()) == (await second.json())


async def test_concurrent_creates_with_other_details_one_wins_the_rest_conflict(
    client: Client,
) -> None:
    body = show_body(10)
    bodies = [body | {"number_of_tickets": n} for n in range(10, 16)]
    responses = await asyncio.gather(*(client.post("/shows", json=b) for b in bodies))
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409]


async def test_shows_need_no_token_when_none_is_set(client: Client) -> None:
    assert await create_show(client, 1)
