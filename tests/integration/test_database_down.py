"""With PostgreSQL unreachable the API answers quickly and clearly, never a 500."""

from __future__ import annotations

import socket
import uuid

from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.settings import Settings
from tests.support.api import booking_body


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_database_is_503_not_500(settings: Settings) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere"
    app = create_app(settings.replaced(database_url=url))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/health")).status == 200
        ready = await client.get("/ready")
        assert ready.status == 503
        booking = await client.post("/book-tickets", json=booking_body(str(uuid.uuid4()), 1))
        assert booking.status == 503
        assert booking.headers["Retry-After"]
        assert await booking.json() == {"error": "database unavailable"}
