"""JSON out, the fast way (orjson): response bodies, outbox payloads, log lines.

Reading stays with pydantic's parser (service/api/bodies.py), which is as fast and strict.
orjson writes compact JSON with UTF-8 as is, and refuses what JSON cannot hold (NaN, lone
surrogates) instead of writing it.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web


def to_json(value: Any) -> str:
    return _dumps(value).decode()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_uuid_subclass)


def _uuid_subclass(value: Any) -> str:
    # orjson writes uuid.UUID itself but no subclass of it; asyncpg reads uuid columns as one
    # (a cancellation's event carries ids read from its booking's row).
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Bytes as orjson writes them: no str in between, to be encoded again on the way out.
    return web.Response(
        body=_dumps(data),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
